/* Hostile native programs for the OS-layer tests: argv[1] selects the attack.
 * Exit 0 = the attack reached its goal (the test fails), 3 = the attack failed with
 * an error (printed on stdout). Attacks blocked by seccomp never return. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <sys/stat.h>
#include <unistd.h>

static int failed(const char *what) {
    printf("%s: %s\n", what, strerror(errno));
    fflush(stdout);
    return 3;
}

int main(int argc, char **argv) {
    const char *a = argc > 1 ? argv[1] : "";
    if (!strcmp(a, "true")) { printf("ok\n"); return 0; }
    if (!strcmp(a, "read")) { /* argv[2] = path */
        int fd = open(argv[2], O_RDONLY);
        if (fd < 0) return failed("open");
        char b[64]; ssize_t n = read(fd, b, sizeof b);
        if (n < 0) return failed("read");
        printf("read %zd bytes\n", n); return 0;
    }
    if (!strcmp(a, "write")) { /* argv[2] = path */
        int fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) return failed("open");
        if (write(fd, "pwned\n", 6) != 6) return failed("write");
        return 0;
    }
    if (!strcmp(a, "fill")) { /* fill the scratch dir: many 1 MiB files */
        static char buf[1 << 20];
        memset(buf, 'x', sizeof buf);
        for (int i = 0; i < 100000; i++) {
            char p[64]; snprintf(p, sizeof p, "/scratch/f%d", i);
            int fd = open(p, O_WRONLY | O_CREAT, 0644);
            if (fd < 0) return failed("open");
            if (write(fd, buf, sizeof buf) != (ssize_t)sizeof buf) return failed("write");
            close(fd);
        }
        return 0;
    }
    if (!strcmp(a, "bigfile")) { /* one file past the storage limit */
        static char buf[1 << 20];
        int fd = open("/scratch/big", O_WRONLY | O_CREAT, 0644);
        if (fd < 0) return failed("open");
        for (;;) if (write(fd, buf, sizeof buf) < 0) return failed("write");
    }
    if (!strcmp(a, "balloon")) {
        for (size_t total = 0;; total += 1 << 20) {
            char *p = malloc(1 << 20);
            if (!p) return failed("malloc");
            memset(p, 1, 1 << 20);
        }
    }
    if (!strcmp(a, "spin")) { volatile unsigned long x = 0; for (;;) x++; }
    if (!strcmp(a, "sleep")) { for (;;) pause(); }
    if (!strcmp(a, "forkbomb")) {
        for (;;) { pid_t p = fork(); (void)p; }
    }
    if (!strcmp(a, "stdout")) {
        static char buf[1 << 16];
        memset(buf, 'y', sizeof buf);
        for (;;) if (write(1, buf, sizeof buf) < 0) return failed("write");
    }
    if (!strcmp(a, "ignore-term")) {
        signal(SIGTERM, SIG_IGN); signal(SIGINT, SIG_IGN); signal(SIGHUP, SIG_IGN);
        printf("ready\n"); fflush(stdout);
        for (;;) pause();
    }
    if (!strcmp(a, "connect")) { /* argv[2] = port on 127.0.0.1 */
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0) return failed("socket");
        struct sockaddr_in sa = {0};
        sa.sin_family = AF_INET; sa.sin_port = htons(atoi(argv[2]));
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (connect(s, (struct sockaddr *)&sa, sizeof sa) < 0) return failed("connect");
        return 0;
    }
    if (!strcmp(a, "ptrace")) { if (ptrace(PTRACE_TRACEME, 0, 0, 0) < 0) return failed("ptrace"); return 0; }
    if (!strcmp(a, "mount")) { if (mount("none", "/scratch", "tmpfs", 0, 0) < 0) return failed("mount"); return 0; }
    if (!strcmp(a, "unshare")) { if (unshare(CLONE_NEWUSER) < 0) return failed("unshare"); return 0; }
    if (!strcmp(a, "setuid")) { if (setuid(0) < 0) return failed("setuid"); return 0; }
    if (!strcmp(a, "kill-parent")) { if (kill(getppid() ? getppid() : 1, SIGKILL) < 0) return failed("kill"); return 0; }
    if (!strcmp(a, "hostname")) { /* learn the host's name: reached unless it is the sandbox's */
        char name[256] = {0};
        gethostname(name, sizeof name - 1);
        printf("hostname %s\n", name);
        return strcmp(name, "askee") ? 0 : 3;
    }
    if (!strcmp(a, "sethostname")) { if (sethostname("pwned", 5) < 0) return failed("sethostname"); return 0; }
    if (!strcmp(a, "chmod-suid")) { if (chmod("/prog", 04755) < 0) return failed("chmod"); return 0; }
    printf("unknown attack %s\n", a);
    return 2;
}
