// Package show renders image files for people (crtools show): one file as
// indented text or as crit-style JSON, with addresses and flags in hex and,
// on request, page contents as a hex dump; or a whole images directory as a
// summary of its process tree, memory and open files.
//
// It reads through engine/image, so every file is checked the same way a
// restore checks it, and a damaged file gives that package's typed error,
// which names the file.
package show
