/* A deliberately buggy C library for memguard's tests.
 *
 * Every function allocates through the callbacks installed with buggy_set_allocator(),
 * the way zlib or expat allocate through a custom allocator.  Each buggy_* function
 * commits one classic memory bug; buggy_clean and buggy_churn are correct.
 */
#include <stddef.h>
#include <string.h>

typedef void *(*malloc_fn)(size_t);
typedef void (*free_fn)(void *);

static malloc_fn g_malloc;
static free_fn g_free;

void buggy_set_allocator(malloc_fn m, free_fn f) { g_malloc = m; g_free = f; }

/* Correct: allocate, use every byte, free.  Returns the first byte, -1 on NULL. */
int buggy_clean(size_t n) {
    unsigned char *p = g_malloc(n);
    if (!p) return -1;
    memset(p, 'a', n);
    int first = n ? p[0] : 0;
    g_free(p);
    return first;
}

/* Writes one byte past the end of the block, then frees it. */
void buggy_overflow(size_t n) {
    char *p = g_malloc(n);
    if (!p) return;
    memset(p, 'A', n + 1);  /* 'A' is never a canary byte */
    g_free(p);
}

/* Writes one byte before the start of the block, then frees it. */
void buggy_underflow(size_t n) {
    char *p = g_malloc(n);
    if (!p) return;
    p[-1] = 'A';
    g_free(p);
}

/* Frees the same block twice. */
void buggy_double_free(size_t n) {
    void *p = g_malloc(n);
    if (!p) return;
    g_free(p);
    g_free(p);
}

/* Writes into the block after freeing it. */
void buggy_use_after_free(size_t n) {
    char *volatile p = g_malloc(n);
    if (!p) return;
    g_free(p);
    p[0] = 'z';
}

/* Returns a block nobody frees. */
void *buggy_leak(size_t n) {
    char *p = g_malloc(n);
    if (p) memset(p, 'l', n);
    return p;
}

/* Frees an interior pointer (then the block itself, correctly). */
void buggy_interior_free(size_t n) {
    char *p = g_malloc(n);
    if (!p) return;
    g_free(p + 8);
    g_free(p);
}

/* Frees memory the allocator never handed out. */
void buggy_foreign_free(void) {
    static char not_from_malloc[64];
    g_free(not_from_malloc + 16);
}

/* Returns 1 when the allocator returned NULL for n bytes, 0 otherwise. */
int buggy_check_null(size_t n) {
    void *p = g_malloc(n);
    if (!p) return 1;
    g_free(p);
    return 0;
}

/* Correct: count malloc/free pairs of size bytes; returns the number that succeeded. */
long buggy_churn(size_t count, size_t size) {
    long ok = 0;
    for (size_t i = 0; i < count; i++) {
        char *p = g_malloc(size);
        if (!p) continue;
        p[0] = 1;
        g_free(p);
        ok++;
    }
    return ok;
}
