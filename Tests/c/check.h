/* check.h: a minimal TAP-like harness for the C tests of metamorph.h.
 * CHECK(cond, fmt, ...) prints "ok - ..." or "not ok - ... (file:line)" and counts;
 * check_summary() prints "# N passed, M failed" (parsed by run.sh) and returns the exit code. */
#ifndef MM_TEST_CHECK_H
#define MM_TEST_CHECK_H

#include <stdarg.h>
#include <stdio.h>

#ifndef MM_TEST_NO_THREADS
#include <pthread.h>
static pthread_mutex_t check_lock_ = PTHREAD_MUTEX_INITIALIZER;
#define CHECK_LOCK() pthread_mutex_lock(&check_lock_)
#define CHECK_UNLOCK() pthread_mutex_unlock(&check_lock_)
#else
#define CHECK_LOCK() ((void)0)
#define CHECK_UNLOCK() ((void)0)
#endif

static int checks_passed_ = 0;
static int checks_failed_ = 0;

static int check_(int ok, const char *file, int line, const char *fmt, ...) {
    va_list ap;
    CHECK_LOCK();
    printf(ok ? "ok - " : "not ok - ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    if (!ok) printf("  (%s:%d)", file, line);
    printf("\n");
    fflush(stdout);
    if (ok) checks_passed_++; else checks_failed_++;
    CHECK_UNLOCK();
    return ok;
}

#define CHECK(cond, ...) check_((cond) ? 1 : 0, __FILE__, __LINE__, __VA_ARGS__)
/* A status check that prints the library's message when it fails. */
#define CHECK_STATUS(expr, want, what)                                                            \
    do {                                                                                          \
        mm_status got_ = (expr);                                                                  \
        if (got_ == (want))                                                                       \
            check_(1, __FILE__, __LINE__, "%s -> %s", what, mm_status_name(got_));                \
        else                                                                                      \
            check_(0, __FILE__, __LINE__, "%s -> %s, want %s [%s]", what, mm_status_name(got_),   \
                   mm_status_name(want), got_ != MM_OK ? mm_last_error() : "");                   \
    } while (0)

static int check_summary(void) {
    printf("# %d passed, %d failed\n", checks_passed_, checks_failed_);
    return checks_failed_ == 0 ? 0 : 1;
}

#endif
