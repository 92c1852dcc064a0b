package runner

import (
	"reflect"
	"slices"
	"strings"
)

// Comparing two configs by YAML key, for a reload: which keys changed, and
// putting back the values of those that only a restart can change. Both
// walk the structs by their yaml tags, so keys added to the config later
// are compared without a change here. Values are never shown: keys and
// passwords are config values.

// walkChanged calls fn with the YAML path of every leaf (a value that is
// not a struct) that differs between old and n, two values of one struct
// type. Inline structs share their parent's prefix.
func walkChanged(old, n reflect.Value, prefix string, fn func(path string, old, n reflect.Value)) {
	t := n.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		path := prefix + name
		if f.Type.Kind() == reflect.Struct {
			sub := path + "."
			if strings.Contains(opts, "inline") {
				sub = prefix
			}
			walkChanged(old.Field(i), n.Field(i), sub, fn)
			continue
		}
		if !reflect.DeepEqual(old.Field(i).Interface(), n.Field(i).Interface()) {
			fn(path, old.Field(i), n.Field(i))
		}
	}
}

// keepRestartOnly puts the old value back into n for every changed key
// that restart says only a restart can change, and returns those keys.
// old and n point to configs of one type.
func keepRestartOnly(old, n any, section string, restart func(path string) bool) []string {
	var kept []string
	walkChanged(reflect.ValueOf(old).Elem(), reflect.ValueOf(n).Elem(), "", func(path string, o, v reflect.Value) {
		if restart(path) {
			v.Set(o)
			kept = append(kept, section+"."+path)
		}
	})
	return kept
}

// changedKeys lists the keys whose values differ between old and n (two
// configs of one type); a map's entries are listed by name
// (server.clients.alice), so added and removed users show.
func changedKeys(old, n any, section string) []string {
	var out []string
	walkChanged(reflect.ValueOf(old).Elem(), reflect.ValueOf(n).Elem(), "", func(path string, o, v reflect.Value) {
		path = section + "." + path
		if v.Kind() != reflect.Map || o.Len()+v.Len() == 0 {
			out = append(out, path)
			return
		}
		var names []string
		for _, m := range []reflect.Value{o, v} {
			for _, k := range m.MapKeys() {
				a, b := o.MapIndex(k), v.MapIndex(k)
				if !a.IsValid() || !b.IsValid() || !reflect.DeepEqual(a.Interface(), b.Interface()) {
					names = append(names, path+"."+k.String())
				}
			}
		}
		slices.Sort(names)
		out = append(out, slices.Compact(names)...)
	})
	return out
}

// under says whether path is key or a key inside it.
func under(path, key string) bool {
	return path == key || strings.HasPrefix(path, key+".")
}

// restartKeys returns the test for keys that only a restart can change:
// those under one of keys, except those under one of except.
func restartKeys(keys, except []string) func(string) bool {
	return func(path string) bool {
		for _, e := range except {
			if under(path, e) {
				return false
			}
		}
		for _, k := range keys {
			if under(path, k) {
				return true
			}
		}
		return false
	}
}
