/* test_threads.c: one model shared by many threads.
 *   test_threads MODEL_DIR
 * - 4 threads each create a session, generate 8 greedy tokens, free: all equal the reference;
 * - several threads create and free handles (sessions, results, jobs, tokenizer calls) in a loop;
 * - mm_last_error is per thread;
 * - mm_session_cancel from another thread stops a blocking mm_generate. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "metamorph.h"
#include "check.h"

#define N_THREADS 4
#define N_TOKENS 8
#define CHURN_ITERS 40

static mm_model *model;

static mm_prompt_part text_part(const char *s) {
    mm_prompt_part p;
    memset(&p, 0, sizeof p);
    p.struct_size = sizeof p;
    p.kind = MM_PART_TEXT;
    p.text = s;
    p.text_len = SIZE_MAX;
    return p;
}

/* Generate N_TOKENS greedy tokens of "Hello world" (raw) on a new session; returns the count. */
static int greedy(int32_t *out, int32_t n_threads) {
    mm_session *s = NULL;
    mm_result *r = NULL;
    mm_session_params sp;
    mm_gen_params gp;
    mm_prompt_part part = text_part("Hello world");
    const int32_t *t;
    size_t n = 0;
    mm_session_params_init(&sp);
    sp.n_threads = n_threads;
    if (mm_session_create(model, &sp, &s) != MM_OK) return -1;
    mm_gen_params_init(&gp);
    gp.raw = 1;
    gp.max_tokens = N_TOKENS;
    if (mm_generate(s, &part, 1, &gp, &r) != MM_OK) {
        mm_session_free(s);
        return -2;
    }
    t = mm_result_tokens(r, &n);
    memcpy(out, t, n * sizeof *t);
    mm_result_free(r);
    mm_session_free(s);
    return (int)n;
}

struct gen_arg {
    int32_t tokens[N_TOKENS];
    int n;
    pthread_barrier_t *barrier;
};

static void *gen_thread(void *p) {
    struct gen_arg *a = (struct gen_arg *)p;
    pthread_barrier_wait(a->barrier);
    a->n = greedy(a->tokens, 1);
    return NULL;
}

static void test_parallel_sessions(void) {
    int32_t ref[N_TOKENS];
    int nref = greedy(ref, 1), i;
    struct gen_arg args[N_THREADS];
    pthread_t th[N_THREADS];
    pthread_barrier_t barrier;
    CHECK(nref > 0, "reference generation on the main thread (%d tokens)", nref);
    pthread_barrier_init(&barrier, NULL, N_THREADS);
    for (i = 0; i < N_THREADS; i++) {
        memset(&args[i], 0, sizeof args[i]);
        args[i].barrier = &barrier;
        pthread_create(&th[i], NULL, gen_thread, &args[i]);
    }
    for (i = 0; i < N_THREADS; i++) pthread_join(th[i], NULL);
    pthread_barrier_destroy(&barrier);
    for (i = 0; i < N_THREADS; i++)
        CHECK(args[i].n == nref && memcmp(args[i].tokens, ref, (size_t)nref * sizeof ref[0]) == 0,
              "thread %d generated the same %d tokens as the reference", i, args[i].n);
}

struct churn_arg {
    int id;
    int failures;
    char first_error[256];
};

static void churn_fail(struct churn_arg *a, const char *what) {
    if (a->failures++ == 0) snprintf(a->first_error, sizeof a->first_error, "%s: %s", what, mm_last_error());
}

static void *churn_thread(void *p) {
    struct churn_arg *a = (struct churn_arg *)p;
    const mm_tokenizer *tok = mm_model_tokenizer(model);
    mm_prompt_part part = text_part("Hi");
    mm_gen_params gp;
    int it;
    mm_gen_params_init(&gp);
    gp.raw = 1;
    gp.max_tokens = 1 + a->id % 3;
    for (it = 0; it < CHURN_ITERS; it++) {
        mm_session *s = NULL;
        mm_result *r = NULL;
        mm_job *j = NULL;
        int32_t ids[16];
        size_t n = 0;
        if (mm_tokenize(tok, "Hello world", 11, MM_TOKENIZE_ADD_BOS, ids, 16, &n) != MM_OK || n != 3)
            churn_fail(a, "mm_tokenize");
        if (mm_session_create(model, NULL, &s) != MM_OK) {
            churn_fail(a, "mm_session_create");
            continue;
        }
        if (it % 2 == 0) {
            if (mm_generate(s, &part, 1, &gp, &r) != MM_OK) churn_fail(a, "mm_generate");
            mm_result_free(r);
        } else {
            if (mm_job_start(s, &part, 1, &gp, &j) != MM_OK) churn_fail(a, "mm_job_start");
            if (it % 4 == 1) mm_job_free(j); /* free while (maybe) running */
            else {
                if (mm_job_wait(j, &r) != MM_OK) churn_fail(a, "mm_job_wait");
                mm_result_free(r);
                mm_job_free(j);
            }
        }
        mm_session_free(s);
        if (mm_session_n_past(s) >= 0) churn_fail(a, "a freed session still answers");
    }
    return NULL;
}

static void test_churn(void) {
    struct churn_arg args[N_THREADS];
    pthread_t th[N_THREADS];
    int i;
    for (i = 0; i < N_THREADS; i++) {
        memset(&args[i], 0, sizeof args[i]);
        args[i].id = i;
        pthread_create(&th[i], NULL, churn_thread, &args[i]);
    }
    for (i = 0; i < N_THREADS; i++) pthread_join(th[i], NULL);
    for (i = 0; i < N_THREADS; i++)
        CHECK(args[i].failures == 0, "thread %d: %d create/use/free rounds without failure %s", i, CHURN_ITERS,
              args[i].first_error);
    CHECK(mm_model_info(model, MM_MODEL_INFO_N_LAYERS) == 2, "the model is intact after the churn");
}

/* mm_last_error is thread-local. */
struct err_arg {
    const char *bad_path;
    char message[256];
    mm_status status;
    pthread_barrier_t *barrier;
};

static void *err_thread(void *p) {
    struct err_arg *a = (struct err_arg *)p;
    mm_model *m = NULL;
    int32_t ids[4];
    size_t n;
    if (a->bad_path) a->status = mm_model_load(a->bad_path, NULL, &m);
    else a->status = mm_tokenize(mm_model_tokenizer(model), "\xff", 1, 0, ids, 4, &n);
    pthread_barrier_wait(a->barrier); /* both threads have failed before either reads */
    pthread_barrier_wait(a->barrier);
    snprintf(a->message, sizeof a->message, "%s", mm_last_error());
    return NULL;
}

static void test_last_error_is_per_thread(void) {
    struct err_arg a, b;
    pthread_t ta, tb;
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, 2);
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    a.bad_path = "/nonexistent/metamorph";
    a.barrier = b.barrier = &barrier;
    pthread_create(&ta, NULL, err_thread, &a);
    pthread_create(&tb, NULL, err_thread, &b);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    pthread_barrier_destroy(&barrier);
    CHECK(a.status == MM_ERR_IO && b.status == MM_ERR_INVALID_UTF8, "the two threads failed differently");
    CHECK(strcmp(a.message, b.message) != 0 && a.message[0] && b.message[0],
          "each thread reads its own mm_last_error (\"%s\" / \"%s\")", a.message, b.message);
}

/* Cancel a blocking generation from another thread. */
struct cancel_arg {
    mm_session *s;
    volatile int started;
};

static int32_t started_cb(const char *text, size_t len, int32_t token, void *user) {
    (void)text;
    (void)len;
    (void)token;
    ((struct cancel_arg *)user)->started = 1;
    return 0;
}

static void *cancel_thread(void *p) {
    struct cancel_arg *a = (struct cancel_arg *)p;
    struct timespec ts = {0, 1000000};
    int i;
    for (i = 0; i < 20000 && !a->started; i++) nanosleep(&ts, NULL);
    mm_session_cancel(a->s);
    return NULL;
}

static void test_cancel_from_thread(void) {
    struct cancel_arg a;
    pthread_t th;
    mm_gen_params gp;
    mm_prompt_part part = text_part("Hello world");
    mm_result *r = NULL;
    size_t n = 0;
    memset(&a, 0, sizeof a);
    if (mm_session_create(model, NULL, &a.s) != MM_OK) {
        CHECK(0, "mm_session_create: %s", mm_last_error());
        return;
    }
    mm_gen_params_init(&gp);
    gp.raw = 1;
    gp.max_tokens = 1500;
    gp.temperature = 0.8f;
    gp.seed = 5;
    gp.on_token = started_cb;
    gp.user = &a;
    pthread_create(&th, NULL, cancel_thread, &a);
    CHECK_STATUS(mm_generate(a.s, &part, 1, &gp, &r), MM_OK, "a long generation");
    pthread_join(th, NULL);
    if (r) {
        mm_result_tokens(r, &n);
        CHECK(mm_result_stop_reason(r) == MM_STOP_CANCELLED || mm_result_stop_reason(r) == MM_STOP_EOS,
              "stopped by mm_session_cancel from another thread (stop %d after %zu tokens)",
              mm_result_stop_reason(r), n);
        mm_result_free(r);
    }
    mm_session_free(a.s);
}

int main(int argc, char **argv) {
    mm_status st;
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL_DIR\n", argv[0]);
        return 2;
    }
    st = mm_model_load(argv[1], NULL, &model);
    CHECK(st == MM_OK, "mm_model_load: %s %s", mm_status_name(st), mm_last_error());
    if (st != MM_OK) return check_summary();
    test_parallel_sessions();
    test_churn();
    test_last_error_is_per_thread();
    test_cancel_from_thread();
    mm_model_free(model);
    return check_summary();
}
