/* SPDX-License-Identifier: MIT */
/*
 * testd.h: helpers for the tests that drive a real daemon: start and stop
 * merged on a private socket and state directory, run mergectl against
 * it, read a job's fields, talk the raw protocol, check the store.
 *
 * One daemon setup per test program: td_init() names the directories
 * (beneath the test's temporary directory) and every helper uses them.
 */
#ifndef TESTD_H
#define TESTD_H

#include <stdbool.h>
#include <sys/types.h>

extern char td_dir[512];	/* the test's directory; mergectl runs here */
extern char td_sock[600];
extern char td_state[600];

void td_init(const char *dir);
void td_sleep_ms(int);
int td_ctl(char **, const char *, ...) __attribute__((format(printf, 2, 3)));
int td_as(const char *, char **, const char *, ...)
    __attribute__((format(printf, 3, 4)));
int td_submit(const char *, ...) __attribute__((format(printf, 1, 2)));
pid_t td_start(const char *, const char *);
int td_stop(pid_t, int);
char *td_job_field(int, const char *);
double td_job_num(int, const char *);
bool td_wait_state(int, const char *, int);
bool td_wait_shards(int, int, int);
bool td_staging_left(const char *);
int td_raw_connect(void);
bool td_send_fds(int, const char *, size_t, const int *, size_t);
char *td_raw_read_all(int, int);
bool td_store_ok(void);
bool td_store_exec(const char *sql);
int td_fd_count(pid_t);

#endif /* TESTD_H */
