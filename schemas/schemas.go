// Package schemas holds the files that define crtools' formats: the JSON
// Schema of job specs (embedded here so the binary needs no file at run
// time) and, under images/, the .proto files of the image format.
package schemas

import _ "embed"

// JobSchema is job.schema.json, JSON Schema draft 2020-12.
//
//go:embed job.schema.json
var JobSchema []byte

// JobSchemaURL is the $id of JobSchema.
const JobSchemaURL = "https://crtools.dev/schemas/job.schema.json"
