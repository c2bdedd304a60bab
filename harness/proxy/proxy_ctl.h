/* `craft-proxy ctl`: the control API for people (a synchronous gRPC client
 * of proto/proxy.proto that prints text or JSON). */
#ifndef CRAFT_PROXY_CTL_H
#define CRAFT_PROXY_CTL_H

#include <stdio.h>

/* argv[0] is "ctl". Returns the exit status: 0 done, 1 refused or failed
 * (the message is on stderr), 2 usage. */
int cp_ctl_main(int argc, char **argv);

/* Prints the usage of `ctl` on f. */
void cp_ctl_usage(FILE *f);

#endif /* CRAFT_PROXY_CTL_H */
