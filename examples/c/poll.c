/* poll.c: the game-loop way. Start a generation as a job, then poll it once per ~16 ms frame
 * and print whatever text is new; optionally cancel after N frames.
 *
 *   cc -std=c99 -Wall -Wextra -Iinclude examples/c/poll.c -L.build/release -lmetamorph \
 *      -Wl,-rpath,$PWD/.build/release -o poll
 *   ./poll path/to/checkpoint "Tell me a story." [CANCEL_AFTER_FRAMES]
 */
#define _POSIX_C_SOURCE 199309L /* nanosleep */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "metamorph.h"

static int failed(const char *what, mm_status status) {
    fprintf(stderr, "\n%s failed: %s: %s\n", what, mm_status_name(status), mm_last_error());
    return 1;
}

static void sleep_ms(long ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
}

int main(int argc, char **argv) {
    mm_model *model = NULL;
    mm_session *session = NULL;
    mm_job *job = NULL;
    mm_result *result = NULL;
    mm_gen_params gen;
    mm_prompt_part part;
    mm_status status;
    char text[256];
    size_t n = 0;
    int32_t stop = MM_STOP_NONE;
    long frame = 0, cancel_after = argc > 3 ? atol(argv[3]) : -1;
    int rc = 1;

    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL_DIR PROMPT [CANCEL_AFTER_FRAMES]\n", argv[0]);
        return 2;
    }
    status = mm_model_load(argv[1], NULL, &model); /* NULL params: defaults */
    if (status != MM_OK) { failed("mm_model_load", status); goto done; }
    status = mm_session_create(model, NULL, &session);
    if (status != MM_OK) { failed("mm_session_create", status); goto done; }

    memset(&part, 0, sizeof part);
    part.struct_size = sizeof part;
    part.kind = MM_PART_TEXT;
    part.text = argv[2];
    part.text_len = strlen(argv[2]);
    mm_gen_params_init(&gen);
    gen.max_tokens = 256;

    status = mm_job_start(session, &part, 1, &gen, &job); /* returns at once */
    if (status != MM_OK) { failed("mm_job_start", status); goto done; }

    /* The frame loop: never blocks on the model. */
    while (stop == MM_STOP_NONE) {
        stop = mm_job_poll(job, text, sizeof text, &n);
        if (n > 0) {
            fwrite(text, 1, n, stdout);
            fflush(stdout);
        }
        if (stop == MM_STOP_NONE) {
            if (frame == cancel_after) {
                status = mm_job_cancel(job);
                if (status != MM_OK) { failed("mm_job_cancel", status); goto done; }
                fprintf(stderr, "\n[cancel requested at frame %ld]\n", frame);
            }
            sleep_ms(16); /* ... the rest of the frame: render, input, physics ... */
            frame++;
        }
    }

    status = mm_job_wait(job, &result); /* the job has ended: returns at once */
    if (status != MM_OK) { failed("generation", status); goto done; }
    {
        mm_timings t;
        t.struct_size = sizeof t;
        status = mm_result_timings(result, &t);
        if (status != MM_OK) { failed("mm_result_timings", status); goto done; }
        printf("\n\n[%ld frames, stop reason %d, %d tokens in %.1f ms]\n", frame, (int)mm_result_stop_reason(result),
               t.n_generated, t.generate_ms);
    }
    rc = 0;

done:
    mm_result_free(result);
    mm_job_free(job); /* before its session */
    mm_session_free(session);
    mm_model_free(model);
    return rc;
}
