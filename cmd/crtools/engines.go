package main

// The engine packages register their factories (engine.NewDumper,
// engine.NewRestorer) in init; importing them here is what puts the
// checkpoint and restore engines into the crtools binary.
import (
	_ "github.com/crtools/crtools/engine/dump"
	_ "github.com/crtools/crtools/engine/restore"
)
