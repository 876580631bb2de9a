/*
 * cmd/keeld/keeld.h - keeld as a function, for programs that embed the
 * daemon with their own in-process handlers:
 *
 *     static int setup(struct keel_executor *ex, void *ud)
 *     {
 *             return keel_exec_handler_register(ex, "report", report, ud);
 *     }
 *     int main(int argc, char **argv)
 *     {
 *             return keeld_main(argc, argv, setup, NULL);
 *     }
 *
 * keeld_main parses the command line and environment (keeld --help), runs
 * the daemon until SIGTERM or SIGINT, and returns the process exit status:
 * 0 after a clean drain, 1 when a start-up step failed (the reason is
 * logged and printed), 2 for a usage error.
 */
#ifndef KEELD_H
#define KEELD_H

#include <keel/exec.h>

/* Called once before jobs are loaded; non-zero stops keeld (exit 1). */
typedef int (*keeld_setup_fn)(struct keel_executor *ex, void *ud);

int keeld_main(int argc, char **argv, keeld_setup_fn setup, void *ud);

#endif /* KEELD_H */
