/*
 * tty: holds a terminal it got from outside, as a shell job does: it opens
 * the terminal named by argv[1] at fd 50 and turns echo off on it. crtools
 * must refuse to dump it without -j/--shell-job, naming the descriptor and
 * the option, and leave it running; with -j the task is restored on
 * crtools' own terminal with the settings it had. Verify checks that fd 50
 * is a terminal with echo off.
 */
#include "crt.h"

#include <termios.h>

int main(int argc, char **argv)
{
	struct termios t;
	int s;

	crt_init();
	if (argc < 2)
		crt_die("usage: tty /dev/pts/N");
	s = open(argv[1], O_RDWR | O_NOCTTY);
	if (s < 0 || dup3(s, 50, 0) != 50)
		crt_die("open the terminal %s", argv[1]);
	close(s);
	if (tcgetattr(50, &t))
		crt_die("tcgetattr");
	t.c_lflag &= ~ECHO;
	if (tcsetattr(50, TCSANOW, &t))
		crt_die("tcsetattr");
	crt_ready();
	for (;;) {
		if (crt_pending()) {
			CRT_CHECK(isatty(50), "fd 50 is no longer a terminal");
			CRT_CHECK(tcgetattr(50, &t) == 0 && !(t.c_lflag & ECHO), "terminal settings lost (echo back on)");
			crt_report();
		}
		crt_tick();
		crt_sleep_ms(1);
	}
}
