/*
 * tty: holds a terminal: the slave of a pseudo-terminal pair it opened, at
 * fd 50 (the master at fd 51). crtools must refuse to dump it without
 * -j/--shell-job, naming the descriptor and the option, and leave it
 * running. Verify checks that fd 50 is still a terminal.
 */
#include "crt.h"

#include <termios.h>

int main(void)
{
	char *name;
	int m, s;

	crt_init();
	m = posix_openpt(O_RDWR | O_NOCTTY);
	if (m < 0 || grantpt(m) || unlockpt(m) || !(name = ptsname(m)))
		crt_die("open a pseudo-terminal");
	s = open(name, O_RDWR | O_NOCTTY);
	if (s < 0 || dup3(s, 50, 0) != 50 || dup3(m, 51, 0) != 51)
		crt_die("place the terminal");
	close(s);
	close(m);
	crt_ready();
	for (;;) {
		if (crt_pending()) {
			CRT_CHECK(isatty(50), "fd 50 is no longer a terminal");
			crt_report();
		}
		crt_tick();
		crt_sleep_ms(1);
	}
}
