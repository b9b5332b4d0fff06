package main

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// envName is the LOADMESH_* variable for a flag: --data-dir → LOADMESH_DATA_DIR.
func envName(flag string) string {
	return "LOADMESH_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// applySources fills every flag the command line did not set, first from
// its LOADMESH_* variable, then from the config file (keys are flag names).
// Precedence: command line > environment > file > default. It returns the
// names of the flags that were set by any source.
func applySources(fs *pflag.FlagSet, configFile string, skip map[string]bool) (map[string]bool, error) {
	set := map[string]bool{}
	fs.Visit(func(f *pflag.Flag) { set[f.Name] = true })

	fileVals := map[string]any{}
	if configFile != "" {
		b, err := os.ReadFile(configFile)
		if err != nil {
			return nil, fmt.Errorf("config file: %w", err)
		}
		if err := yaml.Unmarshal(b, &fileVals); err != nil {
			var te *yaml.TypeError
			if errors.As(err, &te) {
				return nil, fmt.Errorf("config file %s: want a mapping of flag names to values (%s)", configFile, strings.Join(te.Errors, "; "))
			}
			return nil, fmt.Errorf("config file %s: %v", configFile, firstLine(err.Error()))
		}
		var unknown []string
		for k := range fileVals {
			if fs.Lookup(k) == nil || skip[k] {
				unknown = append(unknown, k)
			}
		}
		if len(unknown) > 0 {
			sort.Strings(unknown)
			return nil, fmt.Errorf("config file %s: unknown key(s) %s", configFile, strings.Join(unknown, ", "))
		}
		// Check every value's shape, including those the command line or
		// the environment override: a broken file is an error either way.
		var shapeErrs []error
		for k, v := range fileVals {
			if err := checkShape(fs.Lookup(k), v); err != nil {
				shapeErrs = append(shapeErrs, fmt.Errorf("config file %s: %s: %v", configFile, k, err))
			}
		}
		if err := errors.Join(shapeErrs...); err != nil {
			return nil, err
		}
	}

	var errs []error
	fs.VisitAll(func(f *pflag.Flag) {
		if set[f.Name] || skip[f.Name] {
			return
		}
		if v, ok := os.LookupEnv(envName(f.Name)); ok {
			if err := setFlag(f, []string{v}); err != nil {
				errs = append(errs, fmt.Errorf("%s: %v", envName(f.Name), err))
			}
			set[f.Name] = true
			return
		}
		raw, ok := fileVals[f.Name]
		if !ok {
			return
		}
		var vals []string
		switch v := raw.(type) {
		case []any:
			for _, x := range v {
				if m, ok := x.(map[string]any); ok {
					vals = append(vals, mappingSpec(m))
					continue
				}
				vals = append(vals, fmt.Sprint(x))
			}
		case nil:
			return
		default:
			vals = []string{fmt.Sprint(v)}
		}
		if err := setFlag(f, vals); err != nil {
			errs = append(errs, fmt.Errorf("config file %s: %s: %v", configFile, f.Name, err))
		}
		set[f.Name] = true
	})
	return set, errors.Join(errs...)
}

func setFlag(f *pflag.Flag, vals []string) error {
	for _, v := range vals {
		if err := f.Value.Set(v); err != nil {
			return fmt.Errorf("invalid value %q: %v", v, err)
		}
	}
	return nil
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// mappingFlags are the list flags whose items may also be written as
// mappings in a config file; mappingSpec turns such an item into the
// flag's key=value,... form.
var mappingFlags = map[string]bool{"service": true}

// mappingSpec renders a mapping as key=value pairs joined by commas,
// name first and the rest sorted, as --service takes them.
func mappingSpec(m map[string]any) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		if k != "name" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	if _, ok := m["name"]; ok {
		keys = append([]string{"name"}, keys...)
	}
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"="+fmt.Sprint(m[k]))
	}
	return strings.Join(parts, ",")
}

// checkShape accepts a plain value, or a list of plain values for flags
// that take a list (or of mappings of plain values, for mappingFlags).
func checkShape(f *pflag.Flag, v any) error {
	_, isList := f.Value.(pflag.SliceValue)
	switch x := v.(type) {
	case nil:
		return nil
	case []any:
		if !isList {
			return errors.New("want a single value, not a list")
		}
		for _, item := range x {
			if m, ok := item.(map[string]any); ok && mappingFlags[f.Name] {
				for k, mv := range m {
					if !isScalar(mv) {
						return fmt.Errorf("%s: want a plain value", k)
					}
				}
				continue
			}
			if !isScalar(item) {
				return errors.New("list items must be plain values")
			}
		}
		return nil
	}
	if !isScalar(v) {
		return errors.New("want a single value, not a mapping")
	}
	return nil
}

func isScalar(v any) bool {
	switch v.(type) {
	case string, bool, int, int64, uint64, float64:
		return true
	}
	return false
}
