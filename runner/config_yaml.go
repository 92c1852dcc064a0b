package runner

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// ConfigError is a bad value in the config; Key is the YAML path.
type ConfigError struct {
	Key string
	Msg string
}

func (e *ConfigError) Error() string { return e.Key + ": " + e.Msg }

// ConfigErrors is every problem found in a config, in the order found:
// one line each. errors.As finds the first *ConfigError in it.
type ConfigErrors []*ConfigError

func (es ConfigErrors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap lets errors.As and errors.Is look at each problem.
func (es ConfigErrors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// problems collects ConfigErrors under a section ("client", "server").
type problems struct {
	section string
	list    ConfigErrors
	seen    map[*yaml.Node]bool // YAML nodes checked (anchors are shared)
}

// bad records a problem with the key at section.k.
func (p *problems) bad(k, format string, args ...any) {
	key := k
	if p.section != "" {
		key = p.section + "." + k
	}
	p.list = append(p.list, &ConfigError{key, fmt.Sprintf(format, args...)})
}

// err is nil without problems, the one ConfigError if there is one, or
// all of them.
func (p *problems) err() error {
	switch len(p.list) {
	case 0:
		return nil
	case 1:
		return p.list[0]
	}
	return p.list
}

// LoadConfig reads and parses a config file.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return ParseConfig(b)
}

// ParseConfig parses YAML. Unknown keys and values of the wrong type are
// reported with their full path (`server.frontend.prot: unknown key`,
// `client.keepalive: want a duration like 15s, got 10 (line 3)`), all of
// them at once.
func ParseConfig(b []byte) (*Config, error) {
	c, p, err := parseConfig(b)
	if err != nil {
		return nil, err
	}
	if err := p.err(); err != nil {
		return nil, err
	}
	return c, nil
}

// parseConfig decodes what it can and records every key and type problem;
// err is for YAML that cannot be read at all.
func parseConfig(b []byte) (*Config, *problems, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, nil, fmt.Errorf("config: %s", oneLine(err))
	}
	p := new(problems)
	if len(root.Content) > 0 {
		checkNode(p, root.Content[0], reflect.TypeOf(Config{}), "")
	}
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(len(p.list) == 0)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) && len(p.list) == 0 {
		return nil, nil, fmt.Errorf("config: %s", oneLine(err))
	}
	return &c, p, nil
}

func oneLine(err error) string {
	s := strings.TrimPrefix(err.Error(), "yaml: ")
	s = strings.ReplaceAll(s, "unmarshal errors:\n  ", "")
	return strings.ReplaceAll(s, "\n  ", "; ")
}

var durationType = reflect.TypeOf(time.Duration(0))

// checkNode walks a YAML value against the type it decodes into and
// records, by path, every key the struct does not have and every value
// that does not decode into its field's type.
func checkNode(p *problems, n *yaml.Node, t reflect.Type, path string) {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if p.seen[n] {
		return // an anchor already checked where it was defined
	}
	if p.seen == nil {
		p.seen = map[*yaml.Node]bool{}
	}
	p.seen[n] = true
	if t.Kind() != reflect.Struct {
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			p.bad(path, "%s, got %s (line %d)", want(t), shown(n), n.Line)
		}
		return
	}
	if n.Kind != yaml.MappingNode {
		if n.Tag != "!!null" {
			p.bad(path, "want a section of keys, got %s (line %d)", shown(n), n.Line)
		}
		return
	}
	fields := map[string]reflect.Type{}
	var collect func(reflect.Type)
	collect = func(t reflect.Type) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if opts == "inline" {
				collect(f.Type)
				continue
			}
			if name != "" && name != "-" {
				fields[name] = f.Type
			}
		}
	}
	collect(t)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i].Value
		key := k
		if path != "" {
			key = path + "." + k
		}
		ft, ok := fields[k]
		if msg, retired := retiredKeys[k]; retired && !ok {
			p.bad(key, "%s (line %d)", msg, n.Content[i].Line)
			continue
		}
		if !ok {
			p.bad(key, "unknown key (line %d)", n.Content[i].Line)
			continue
		}
		checkNode(p, n.Content[i+1], ft, key)
	}
}

// want says in words what a field of type t takes.
func want(t reflect.Type) string {
	if t == durationType {
		return "want a duration like 15s"
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int64:
		return "want a whole number"
	case reflect.Uint64:
		return "want a whole number ≥ 0"
	case reflect.Bool:
		return "want true or false"
	case reflect.String:
		return "want a text value"
	case reflect.Map:
		return "want a mapping of name: value"
	case reflect.Slice:
		return "want a list"
	}
	return "want a " + t.String()
}

// shown is a YAML value as the user wrote it, short.
func shown(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a section"
	case yaml.SequenceNode:
		return "a list"
	}
	v := n.Value
	if len(v) > 40 {
		v = v[:40] + "…"
	}
	if n.Tag == "!!str" && n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0 {
		return fmt.Sprintf("%q", v)
	}
	return v
}
