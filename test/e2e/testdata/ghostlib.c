/*
 * ghostlib: the shared library of ghostmap.c, dlopen()ed from a copy that
 * the test then deletes. ghost_fn's code runs from the deleted file's
 * text; ghost_calls lives in its (private, written) data.
 */
static unsigned long ghost_calls = 1000; /* in .data: a private file mapping */

unsigned long ghost_fn(unsigned long x)
{
	ghost_calls++;
	return x * 3 + 7;
}

unsigned long ghost_count(void)
{
	return ghost_calls;
}
