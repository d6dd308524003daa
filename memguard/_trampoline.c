/* Exception-preserving trampolines for memguard's C-callable allocators.
 *
 * C code may call an allocator with a Python exception pending (NumPy frees temporaries
 * on its error paths; SQLite calls xRoundup on its).  A ctypes callback then runs Python
 * code with the exception set, loses it and fails with a SystemError.  Each trampoline
 * here has the C shape of one allocator callback: it takes the GIL, sets the pending
 * exception aside, calls the ctypes callback bound to its slot, puts the exception back
 * and releases the GIL.  A slot with nothing bound returns 0 (NULL) and does nothing, and
 * so does every trampoline once the interpreter is finalizing.
 *
 * Shapes are named by their C signature: the return type, '_', the parameter types, with
 * p = a pointer, z = size_t, i = int (or unsigned int), v = void (return only).
 * This module holds only these trampolines; everything else in memguard is ctypes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>

#define SLOTS 128

/* Once the interpreter is finalizing, no Python code may run (modules and builtins are
 * being torn down): a trampoline then returns 0 (NULL) and does nothing.  Memory C frees
 * then is simply not returned; the process is ending. */
#if PY_VERSION_HEX >= 0x030D0000
#define FINALIZING() Py_IsFinalizing()
#else
#define FINALIZING() _Py_IsFinalizing()
#endif

#if PY_VERSION_HEX >= 0x030C0000
#define SAVE_ERROR PyObject *saved_ = PyErr_GetRaisedException();
#define RESTORE_ERROR PyErr_SetRaisedException(saved_);
#else
#define SAVE_ERROR PyObject *st_, *sv_, *stb_; PyErr_Fetch(&st_, &sv_, &stb_);
#define RESTORE_ERROR PyErr_Restore(st_, sv_, stb_);
#endif

/* 128 slots: index a * 8 + b for a in 0..15, b in 0..7. */
#define ROW(M, S, a) M(S, a, 0) M(S, a, 1) M(S, a, 2) M(S, a, 3) M(S, a, 4) M(S, a, 5) M(S, a, 6) M(S, a, 7)
#define ALL(M, S) ROW(M, S, 0) ROW(M, S, 1) ROW(M, S, 2) ROW(M, S, 3) ROW(M, S, 4) ROW(M, S, 5) \
    ROW(M, S, 6) ROW(M, S, 7) ROW(M, S, 8) ROW(M, S, 9) ROW(M, S, 10) ROW(M, S, 11) ROW(M, S, 12) \
    ROW(M, S, 13) ROW(M, S, 14) ROW(M, S, 15)
#define ADDRESS(S, a, b) (void *)S##_t_##a##_##b,

/* The body shared by every trampoline of a shape (one function per shape). */
#define VALUE_CALL(S, RET, PARAMS, ARGS)                                                     \
    static RET S##_body(int slot_, PARAMS_OF_##S)                                            \
    {                                                                                        \
        RET result_ = 0;                                                                     \
        if (FINALIZING())                                                                    \
            return result_;                                                                  \
        PyGILState_STATE gil_ = PyGILState_Ensure();                                         \
        SAVE_ERROR                                                                           \
        S##_fn fn_ = S##_inner[slot_];                                                       \
        if (fn_ != NULL)                                                                     \
            result_ = fn_ ARGS;                                                              \
        RESTORE_ERROR                                                                        \
        PyGILState_Release(gil_);                                                            \
        return result_;                                                                      \
    }

#define VOID_CALL(S, PARAMS, ARGS)                                                           \
    static void S##_body(int slot_, PARAMS_OF_##S)                                           \
    {                                                                                        \
        if (FINALIZING())                                                                    \
            return;                                                                          \
        PyGILState_STATE gil_ = PyGILState_Ensure();                                         \
        SAVE_ERROR                                                                           \
        S##_fn fn_ = S##_inner[slot_];                                                       \
        if (fn_ != NULL)                                                                     \
            fn_ ARGS;                                                                        \
        RESTORE_ERROR                                                                        \
        PyGILState_Release(gil_);                                                            \
    }

/* Each shape: its parameter list (for the body, after the slot), the function type, the
 * trampoline of one slot. */
#define SHAPE(S, RET, PARAMS, ARGS, CALL)                                                    \
    typedef RET (*S##_fn) PARAMS;                                                            \
    static S##_fn S##_inner[SLOTS];                                                          \
    CALL                                                                                     \
    ALL(S##_TRAMPOLINE, S)                                                                   \
    static void *S##_addresses[SLOTS] = {ALL(ADDRESS, S)};

#define PARAMS_OF_p_z size_t a
#define PARAMS_OF_p_zz size_t a, size_t b
#define PARAMS_OF_p_pz void *a, size_t b
#define PARAMS_OF_v_p void *a
#define PARAMS_OF_z_p void *a
#define PARAMS_OF_p_pii void *a, int b, int c
#define PARAMS_OF_v_pp void *a, void *b
#define PARAMS_OF_p_pzz void *a, size_t b, size_t c
#define PARAMS_OF_p_i int a
#define PARAMS_OF_p_pi void *a, int b
#define PARAMS_OF_i_p void *a
#define PARAMS_OF_i_i int a
#define PARAMS_OF_p_ppz void *a, void *b, size_t c
#define PARAMS_OF_v_ppz void *a, void *b, size_t c
#define PARAMS_OF_p_p void *a
#define PARAMS_OF_p_zpi size_t a, void *b, int c
#define PARAMS_OF_p_pzpi void *a, size_t b, void *c, int d
#define PARAMS_OF_v_ppi void *a, void *b, int c

#define T1(S, RET, a_, b_) static RET S##_t_##a_##_##b_(PARAMS_OF_##S) { return S##_body(a_ * 8 + b_, a); }
#define T2(S, RET, a_, b_) static RET S##_t_##a_##_##b_(PARAMS_OF_##S) { return S##_body(a_ * 8 + b_, a, b); }
#define T3(S, RET, a_, b_) static RET S##_t_##a_##_##b_(PARAMS_OF_##S) { return S##_body(a_ * 8 + b_, a, b, c); }
#define T4(S, RET, a_, b_) static RET S##_t_##a_##_##b_(PARAMS_OF_##S) { return S##_body(a_ * 8 + b_, a, b, c, d); }
#define V1(S, a_, b_) static void S##_t_##a_##_##b_(PARAMS_OF_##S) { S##_body(a_ * 8 + b_, a); }
#define V2(S, a_, b_) static void S##_t_##a_##_##b_(PARAMS_OF_##S) { S##_body(a_ * 8 + b_, a, b); }
#define V3(S, a_, b_) static void S##_t_##a_##_##b_(PARAMS_OF_##S) { S##_body(a_ * 8 + b_, a, b, c); }

#define p_z_TRAMPOLINE(S, a_, b_) T1(S, void *, a_, b_)
#define p_zz_TRAMPOLINE(S, a_, b_) T2(S, void *, a_, b_)
#define p_pz_TRAMPOLINE(S, a_, b_) T2(S, void *, a_, b_)
#define v_p_TRAMPOLINE(S, a_, b_) V1(S, a_, b_)
#define z_p_TRAMPOLINE(S, a_, b_) T1(S, size_t, a_, b_)
#define p_pii_TRAMPOLINE(S, a_, b_) T3(S, void *, a_, b_)
#define v_pp_TRAMPOLINE(S, a_, b_) V2(S, a_, b_)
#define p_pzz_TRAMPOLINE(S, a_, b_) T3(S, void *, a_, b_)
#define p_i_TRAMPOLINE(S, a_, b_) T1(S, void *, a_, b_)
#define p_pi_TRAMPOLINE(S, a_, b_) T2(S, void *, a_, b_)
#define i_p_TRAMPOLINE(S, a_, b_) T1(S, int, a_, b_)
#define i_i_TRAMPOLINE(S, a_, b_) T1(S, int, a_, b_)
#define p_ppz_TRAMPOLINE(S, a_, b_) T3(S, void *, a_, b_)
#define v_ppz_TRAMPOLINE(S, a_, b_) V3(S, a_, b_)
#define p_p_TRAMPOLINE(S, a_, b_) T1(S, void *, a_, b_)
#define p_zpi_TRAMPOLINE(S, a_, b_) T3(S, void *, a_, b_)
#define p_pzpi_TRAMPOLINE(S, a_, b_) T4(S, void *, a_, b_)
#define v_ppi_TRAMPOLINE(S, a_, b_) V3(S, a_, b_)

SHAPE(p_z, void *, (size_t), (a), VALUE_CALL(p_z, void *, (size_t), (a)))
SHAPE(p_zz, void *, (size_t, size_t), (a, b), VALUE_CALL(p_zz, void *, (size_t, size_t), (a, b)))
SHAPE(p_pz, void *, (void *, size_t), (a, b), VALUE_CALL(p_pz, void *, (void *, size_t), (a, b)))
SHAPE(v_p, void, (void *), (a), VOID_CALL(v_p, (void *), (a)))
SHAPE(z_p, size_t, (void *), (a), VALUE_CALL(z_p, size_t, (void *), (a)))
SHAPE(p_pii, void *, (void *, int, int), (a, b, c), VALUE_CALL(p_pii, void *, (void *, int, int), (a, b, c)))
SHAPE(v_pp, void, (void *, void *), (a, b), VOID_CALL(v_pp, (void *, void *), (a, b)))
SHAPE(p_pzz, void *, (void *, size_t, size_t), (a, b, c),
      VALUE_CALL(p_pzz, void *, (void *, size_t, size_t), (a, b, c)))
SHAPE(p_i, void *, (int), (a), VALUE_CALL(p_i, void *, (int), (a)))
SHAPE(p_pi, void *, (void *, int), (a, b), VALUE_CALL(p_pi, void *, (void *, int), (a, b)))
SHAPE(i_p, int, (void *), (a), VALUE_CALL(i_p, int, (void *), (a)))
SHAPE(i_i, int, (int), (a), VALUE_CALL(i_i, int, (int), (a)))
SHAPE(p_ppz, void *, (void *, void *, size_t), (a, b, c),
      VALUE_CALL(p_ppz, void *, (void *, void *, size_t), (a, b, c)))
SHAPE(v_ppz, void, (void *, void *, size_t), (a, b, c), VOID_CALL(v_ppz, (void *, void *, size_t), (a, b, c)))
SHAPE(p_p, void *, (void *), (a), VALUE_CALL(p_p, void *, (void *), (a)))
SHAPE(p_zpi, void *, (size_t, void *, int), (a, b, c), VALUE_CALL(p_zpi, void *, (size_t, void *, int), (a, b, c)))
SHAPE(p_pzpi, void *, (void *, size_t, void *, int), (a, b, c, d),
      VALUE_CALL(p_pzpi, void *, (void *, size_t, void *, int), (a, b, c, d)))
SHAPE(v_ppi, void, (void *, void *, int), (a, b, c), VOID_CALL(v_ppi, (void *, void *, int), (a, b, c)))

typedef struct {
    const char *name;
    void **inner;
    void **addresses;
} Shape;

#define ENTRY(S) {#S, (void **)S##_inner, S##_addresses}
static const Shape shapes[] = {
    ENTRY(p_z), ENTRY(p_zz), ENTRY(p_pz), ENTRY(v_p), ENTRY(z_p), ENTRY(p_pii), ENTRY(v_pp), ENTRY(p_pzz),
    ENTRY(p_i), ENTRY(p_pi), ENTRY(i_p), ENTRY(i_i), ENTRY(p_ppz), ENTRY(v_ppz), ENTRY(p_p), ENTRY(p_zpi),
    ENTRY(p_pzpi), ENTRY(v_ppi),
};
#define NSHAPES (sizeof(shapes) / sizeof(shapes[0]))

static const Shape *find_shape(const char *name)
{
    for (size_t i = 0; i < NSHAPES; i++)
        if (strcmp(shapes[i].name, name) == 0)
            return &shapes[i];
    PyErr_Format(PyExc_ValueError, "no trampoline of the shape %s", name);
    return NULL;
}

static int check_slot(int slot)
{
    if (slot < 0 || slot >= SLOTS) {
        PyErr_Format(PyExc_ValueError, "slot %d is out of range [0, %d)", slot, SLOTS);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(bind_doc,
"bind(shape, slot, inner) -> int\n\n"
"Bind the C function at address ``inner`` (0 unbinds) to the trampoline ``slot`` of\n"
"``shape``; return the trampoline's address.");

static PyObject *bind(PyObject *module, PyObject *args)
{
    const char *name;
    int slot;
    unsigned long long inner;
    (void)module;
    if (!PyArg_ParseTuple(args, "siK:bind", &name, &slot, &inner))
        return NULL;
    const Shape *shape = find_shape(name);
    if (shape == NULL || check_slot(slot) < 0)
        return NULL;
    shape->inner[slot] = (void *)(uintptr_t)inner;
    return PyLong_FromVoidPtr(shape->addresses[slot]);
}

PyDoc_STRVAR(bound_doc, "bound(shape, slot) -> int\n\nThe address bound to a slot (0 when none).");

static PyObject *bound(PyObject *module, PyObject *args)
{
    const char *name;
    int slot;
    (void)module;
    if (!PyArg_ParseTuple(args, "si:bound", &name, &slot))
        return NULL;
    const Shape *shape = find_shape(name);
    if (shape == NULL || check_slot(slot) < 0)
        return NULL;
    return PyLong_FromVoidPtr(shape->inner[slot]);
}

static PyMethodDef methods[] = {
    {"bind", bind, METH_VARARGS, bind_doc},
    {"bound", bound, METH_VARARGS, bound_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "memguard._trampoline",
    "Exception-preserving trampolines for memguard's C-callable allocators.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__trampoline(void)
{
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL)
        return NULL;
    PyObject *names = PyTuple_New(NSHAPES);
    if (names == NULL) {
        Py_DECREF(module);
        return NULL;
    }
    for (size_t i = 0; i < NSHAPES; i++) {
        PyObject *s = PyUnicode_FromString(shapes[i].name);
        if (s == NULL) {
            Py_DECREF(names);
            Py_DECREF(module);
            return NULL;
        }
        PyTuple_SET_ITEM(names, i, s);
    }
    if (PyModule_AddObject(module, "SHAPES", names) < 0) {
        Py_DECREF(names);
        Py_DECREF(module);
        return NULL;
    }
    if (PyModule_AddIntConstant(module, "SLOTS", SLOTS) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
