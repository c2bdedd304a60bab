/* `craft-proxy bench`: calls per second through one link and the latency
 * the proxy adds, against direct calls in the same run. It runs its own
 * tiny C target server and client in this process and starts the proxy
 * (this program) as a child. */
#ifndef CRAFT_PROXY_BENCH_H
#define CRAFT_PROXY_BENCH_H

/* argv[0] is "bench"; `self` is the path of the craft-proxy executable
 * (the proxy child). Returns the exit status. */
int cp_bench_main(int argc, char **argv, const char *self);

#endif /* CRAFT_PROXY_BENCH_H */
