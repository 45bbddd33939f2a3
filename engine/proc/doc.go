// Package proc parses the files of /proc that the dump engine reads:
// stat, status, smaps/maps, fdinfo, timers, auxv, task lists and children.
//
// Every parser comes in two halves: a pure function that takes the file's
// bytes (ParseStat, ParseStatus, ...) and is table-tested with hostile
// inputs, and a small reader (ReadStat(pid), ...) that opens the file.
// Parsers never panic on malformed input; they return an error naming the
// file and the line.
//
// Paths deserve care. The kernel prints a mapping's path in maps and smaps
// with only '\n' escaped (as "\012") and nothing else, so a path holding a
// backslash sequence is ambiguous there; callers that need the exact path
// of a file mapping read the /proc/PID/map_files/ link instead (MapFilePath).
// A " (deleted)" suffix is likewise ambiguous with a file really named so;
// callers decide deletion by stat (link count 0), not by the suffix.
package proc
