package spec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
	"gopkg.in/yaml.v3"

	"github.com/crtools/crtools/schemas"
)

// Error is one problem in a spec file, with its position.
type Error struct {
	File         string
	Line, Column int
	Path         string // field path, e.g. spec.target.pid ("" for the document)
	Msg          string // what is wrong and what was expected
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", e.Line, e.Column)
	}
	b.WriteString(": ")
	if e.Path != "" {
		b.WriteString(e.Path + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors are all the problems found in a file, in file order.
type Errors []*Error

func (es Errors) Error() string {
	var s []string
	for _, e := range es {
		s = append(s, e.Error())
	}
	return strings.Join(s, "\n")
}

// LoadFile reads a spec file: one or more YAML documents, each a Job.
// Relative paths in the spec are relative to the file's directory.
func LoadFile(path string) ([]*Job, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read spec: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("resolve spec path: %w", err)
	}
	return Load(path, data, filepath.Dir(abs))
}

// Load parses and validates the YAML documents in data. name is used in
// messages; baseDir anchors relative paths. Every error is an *Error or
// Errors, so callers can tell a bad spec (exit 2) from anything else.
func Load(name string, data []byte, baseDir string) ([]*Job, error) {
	sch, err := compiledSchema()
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var jobs []*Job
	var errs Errors
	for doc := 1; ; doc++ {
		var n yaml.Node
		if err := dec.Decode(&n); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, Errors{yamlSyntaxError(name, err)}
		}
		if len(n.Content) == 0 {
			continue
		}
		root := n.Content[0]
		budget := maxNodes
		v, perrs := toValue(name, root, nil, &budget)
		if len(perrs) > 0 {
			errs = append(errs, perrs...)
			continue
		}
		if err := sch.Validate(v); err != nil {
			var ve *jsonschema.ValidationError
			if !errors.As(err, &ve) {
				return nil, fmt.Errorf("validate %s: %w", name, err)
			}
			errs = append(errs, schemaErrors(name, root, ve)...)
			continue
		}
		job, jerrs := decodeJob(name, root, baseDir)
		if len(jerrs) > 0 {
			errs = append(errs, jerrs...)
			continue
		}
		job.Source = fmt.Sprintf("%s#%d", name, doc)
		jobs = append(jobs, job)
	}
	if len(errs) > 0 {
		sort.SliceStable(errs, func(i, j int) bool {
			if errs[i].Line != errs[j].Line {
				return errs[i].Line < errs[j].Line
			}
			return errs[i].Column < errs[j].Column
		})
		return nil, errs
	}
	if len(jobs) == 0 {
		return nil, Errors{{File: name, Msg: "no job in file: expected a YAML document with apiVersion, kind, metadata and spec"}}
	}
	return jobs, nil
}

// Compiled on first use: only a spec with a YAML error needs it, and a
// package-level regexp is compiled in every crtools run.
var yamlLineRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^yaml: line (\d+): (.*)$`) })

func yamlSyntaxError(name string, err error) *Error {
	msg := err.Error()
	if m := yamlLineRE().FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{File: name, Line: line, Column: 1, Msg: "invalid YAML: " + m[2]}
	}
	return &Error{File: name, Msg: "invalid YAML: " + strings.TrimPrefix(msg, "yaml: ")}
}

var (
	schemaOnce sync.Once
	schemaC    *jsonschema.Schema
	schemaDoc  any
	schemaErr  error
)

// compiledSchema compiles the embedded schema once.
func compiledSchema() (*jsonschema.Schema, error) {
	schemaOnce.Do(func() {
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schemas.JobSchema))
		if err != nil {
			schemaErr = fmt.Errorf("parse embedded job schema: %w", err)
			return
		}
		schemaDoc = doc
		c := jsonschema.NewCompiler()
		if err := c.AddResource(schemas.JobSchemaURL, doc); err != nil {
			schemaErr = fmt.Errorf("add embedded job schema: %w", err)
			return
		}
		schemaC, schemaErr = c.Compile(schemas.JobSchemaURL)
		if schemaErr != nil {
			schemaErr = fmt.Errorf("compile embedded job schema: %w", schemaErr)
		}
	})
	return schemaC, schemaErr
}

// Limits on one document (a job spec is small; these stop alias bombs).
const (
	maxNodes = 100000
	maxDepth = 64
)

// toValue turns a YAML node into the plain values JSON Schema validates
// (map[string]any, []any, string, int64, float64, bool, nil). Duplicate
// keys and non-string keys are errors here, with their position.
func toValue(file string, n *yaml.Node, path []string, budget *int) (any, Errors) {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 8; i++ {
		n = n.Alias
	}
	// Aliases can nest and refer to themselves: bound depth and size.
	*budget--
	if *budget < 0 || len(path) > maxDepth {
		return nil, Errors{{File: file, Line: n.Line, Column: n.Column, Path: fieldPath(path), Msg: "document too large or too deeply nested (aliases?)"}}
	}
	switch n.Kind {
	case yaml.MappingNode:
		m := map[string]any{}
		var errs Errors
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode || (k.Tag != "!!str" && k.Tag != "!!int" && k.Tag != "!!bool") {
				errs = append(errs, &Error{File: file, Line: k.Line, Column: k.Column, Path: fieldPath(path), Msg: "expected a field name"})
				continue
			}
			if k.Value == "<<" {
				errs = append(errs, &Error{File: file, Line: k.Line, Column: k.Column, Path: fieldPath(path), Msg: "merge keys (<<) are not supported"})
				continue
			}
			if _, dup := m[k.Value]; dup {
				errs = append(errs, &Error{File: file, Line: k.Line, Column: k.Column, Path: fieldPath(append(path, k.Value)), Msg: "field given twice"})
				continue
			}
			v, e := toValue(file, val, append(path, k.Value), budget)
			errs = append(errs, e...)
			if len(e) > 0 && *budget < 0 {
				return m, errs
			}
			m[k.Value] = v
		}
		return m, errs
	case yaml.SequenceNode:
		a := make([]any, 0, len(n.Content))
		var errs Errors
		for i, c := range n.Content {
			v, e := toValue(file, c, append(path, strconv.Itoa(i)), budget)
			errs = append(errs, e...)
			if len(e) > 0 && *budget < 0 {
				return a, errs
			}
			a = append(a, v)
		}
		return a, errs
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!null":
			return nil, nil
		case "!!bool":
			var b bool
			if err := n.Decode(&b); err == nil {
				return b, nil
			}
		case "!!int":
			var i int64
			if err := n.Decode(&i); err == nil {
				return i, nil
			}
		case "!!float":
			var f float64
			if err := n.Decode(&f); err == nil {
				return f, nil
			}
		}
		return n.Value, nil
	}
	return nil, Errors{{File: file, Line: n.Line, Column: n.Column, Path: fieldPath(path), Msg: "unexpected YAML node"}}
}

// fieldPath renders a path as spec.hooks.preDump[0].
func fieldPath(path []string) string {
	var b strings.Builder
	for _, p := range path {
		if _, err := strconv.Atoi(p); err == nil {
			b.WriteString("[" + p + "]")
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(p)
	}
	return b.String()
}

// nodeAt finds the node at a JSON instance location (or the deepest
// existing one).
func nodeAt(n *yaml.Node, loc []string) *yaml.Node {
	for _, tok := range loc {
		for n.Kind == yaml.AliasNode {
			n = n.Alias
		}
		switch n.Kind {
		case yaml.MappingNode:
			var next *yaml.Node
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == tok {
					next = n.Content[i+1]
					break
				}
			}
			if next == nil {
				return n
			}
			n = next
		case yaml.SequenceNode:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(n.Content) {
				return n
			}
			n = n.Content[i]
		default:
			return n
		}
	}
	return n
}

// keyNode returns the key node of field name in mapping n, or n.
func keyNode(n *yaml.Node, name string) *yaml.Node {
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == name {
				return n.Content[i]
			}
		}
	}
	return n
}

// printer is made on first use, like yamlLineRE.
var printer = sync.OnceValue(func() *message.Printer { return message.NewPrinter(language.English) })

// schemaErrors flattens a validation error to its leaves and places each
// at the YAML node it is about.
func schemaErrors(file string, root *yaml.Node, ve *jsonschema.ValidationError) Errors {
	var leaves []*jsonschema.ValidationError
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			leaves = append(leaves, e)
			return
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
	seen := map[string]bool{}
	var errs Errors
	for _, l := range leaves {
		loc := l.InstanceLocation
		n := nodeAt(root, loc)
		path := append([]string(nil), loc...)
		var msg string
		switch k := l.ErrorKind.(type) {
		case *kind.AdditionalProperties:
			for _, p := range k.Properties {
				kn := keyNode(n, p)
				e := &Error{File: file, Line: kn.Line, Column: kn.Column, Path: fieldPath(append(path, p)),
					Msg: "unknown field " + strconv.Quote(p) + expectedFields(l.SchemaURL)}
				if !seen[e.Error()] {
					seen[e.Error()] = true
					errs = append(errs, e)
				}
			}
			continue
		case *kind.Required:
			var q []string
			for _, m := range k.Missing {
				q = append(q, strconv.Quote(m))
			}
			msg = "missing required field " + strings.Join(q, ", ")
		case *kind.Type:
			var want []string
			for _, w := range k.Want {
				want = append(want, article(w))
			}
			msg = fmt.Sprintf("expected %s, got %s", strings.Join(want, " or "), article(k.Got))
			if d := schemaDescription(l.SchemaURL); d != "" {
				msg += " (" + d + ")"
			}
		case *kind.Enum:
			var w []string
			for _, x := range k.Want {
				w = append(w, fmt.Sprint(x))
			}
			msg = fmt.Sprintf("got %v, expected one of: %s", k.Got, strings.Join(w, ", "))
		case *kind.Const:
			msg = fmt.Sprintf("got %v, expected %v", k.Got, k.Want)
		case *kind.Pattern:
			msg = patternMessage(l.SchemaURL, k.Got)
		case *kind.MinProperties, *kind.MaxProperties:
			msg = "expected " + schemaDescription(l.SchemaURL)
			if msg == "expected " {
				msg = l.ErrorKind.LocalizedString(printer())
			}
		case *kind.Maximum:
			msg = fmt.Sprintf("expected at most %s, got %s", k.Want.RatString(), k.Got.RatString())
		case *kind.Minimum:
			msg = fmt.Sprintf("expected at least %s, got %s", k.Want.RatString(), k.Got.RatString())
		case *kind.MinItems:
			msg = fmt.Sprintf("expected at least %d item(s)", k.Want)
		case *kind.MinLength:
			msg = "expected a non-empty string"
		default:
			msg = l.ErrorKind.LocalizedString(printer())
		}
		e := &Error{File: file, Line: n.Line, Column: n.Column, Path: fieldPath(path), Msg: msg}
		if !seen[e.Error()] {
			seen[e.Error()] = true
			errs = append(errs, e)
		}
	}
	return errs
}

func article(s string) string {
	switch s {
	case "object":
		return "a mapping"
	case "array":
		return "a list"
	case "integer":
		return "an integer"
	case "null":
		return "nothing (null)"
	case "":
		return s
	}
	if strings.ContainsRune("aeiou", rune(s[0])) {
		return "an " + s
	}
	return "a " + s
}

func patternMessage(schemaURL, got string) string {
	switch {
	case strings.Contains(schemaURL, "/duration"):
		return fmt.Sprintf("got %q, expected a duration such as 30s, 5m, 24h or 7d", got)
	case strings.Contains(schemaURL, "/metadata/"):
		return fmt.Sprintf("got %q, expected a name of letters, digits, '.', '_' and '-' (at most 63 characters)", got)
	case strings.Contains(schemaURL, "/vethPairs/"):
		return fmt.Sprintf("got %q, expected an interface name (1 to 15 characters, no '/' or space)", got)
	}
	return fmt.Sprintf("got %q, which does not match the expected form", got)
}

// schemaNode resolves the fragment of a schema URL in the schema document.
func schemaNode(schemaURL string) map[string]any {
	_, frag, ok := strings.Cut(schemaURL, "#")
	if !ok {
		return nil
	}
	var cur any = schemaDoc
	for _, tok := range strings.Split(strings.TrimPrefix(frag, "/"), "/") {
		if tok == "" {
			continue
		}
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[tok]
	}
	m, _ := cur.(map[string]any)
	return m
}

// expectedFields lists the fields a mapping may have, for "unknown field".
func expectedFields(schemaURL string) string {
	m := schemaNode(schemaURL)
	props, _ := m["properties"].(map[string]any)
	if len(props) == 0 {
		return ""
	}
	var names []string
	for k := range props {
		names = append(names, k)
	}
	sort.Strings(names)
	return ", expected one of: " + strings.Join(names, ", ")
}

func schemaDescription(schemaURL string) string {
	m := schemaNode(schemaURL)
	d, _ := m["description"].(string)
	return strings.TrimSuffix(strings.TrimSpace(d), ".")
}

// MarshalIndentJSON renders a job for `validate --json` and debugging.
func (j *Job) MarshalIndentJSON() ([]byte, error) { return json.MarshalIndent(j, "", "  ") }
