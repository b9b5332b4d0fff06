package autoscale

import (
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
)

// Diff lists the changes from a to b, one human-readable line each, in
// field order, named by their YAML paths:
//
//	limits.max_active: 40 → 60
//	schedules: added "reminder-emails"
//	schedules[self-assessment-week].min_active: 6 → 8
//	hooks.scale_in: removed
//
// Equal specs give an empty list. Schedules are matched by name.
func Diff(a, b Spec) []string {
	var out []string
	diffValue(&out, "", reflect.ValueOf(a), reflect.ValueOf(b))
	return out
}

func yamlName(f reflect.StructField) string {
	tag := f.Tag.Get("yaml")
	if name, _, _ := strings.Cut(tag, ","); name != "" && name != "-" {
		return name
	}
	return strings.ToLower(f.Name)
}

func join(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

func diffValue(out *[]string, path string, a, b reflect.Value) {
	switch a.Kind() {
	case reflect.Struct:
		t := a.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			diffValue(out, join(path, yamlName(f)), a.Field(i), b.Field(i))
		}
	case reflect.Pointer:
		switch {
		case a.IsNil() && b.IsNil():
		case a.IsNil():
			*out = append(*out, fmt.Sprintf("%s: added %s", path, show(b.Elem())))
		case b.IsNil():
			*out = append(*out, fmt.Sprintf("%s: removed", path))
		default:
			diffValue(out, path, a.Elem(), b.Elem())
		}
	case reflect.Map:
		keys := map[string]reflect.Value{}
		for _, k := range a.MapKeys() {
			keys[k.String()] = k
		}
		for _, k := range b.MapKeys() {
			keys[k.String()] = k
		}
		names := make([]string, 0, len(keys))
		for k := range keys {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, name := range names {
			k := keys[name]
			av, bv := a.MapIndex(k), b.MapIndex(k)
			p := join(path, name)
			switch {
			case !av.IsValid():
				*out = append(*out, fmt.Sprintf("%s: added %s", p, show(bv)))
			case !bv.IsValid():
				*out = append(*out, fmt.Sprintf("%s: removed", p))
			default:
				diffValue(out, p, av, bv)
			}
		}
	case reflect.Slice:
		if a.Type().Elem() == reflect.TypeOf(Schedule{}) {
			diffSchedules(out, path, a.Interface().([]Schedule), b.Interface().([]Schedule))
			return
		}
		if a.Len() == 0 && b.Len() == 0 {
			return // nil and empty are the same list
		}
		if !reflect.DeepEqual(a.Interface(), b.Interface()) {
			*out = append(*out, fmt.Sprintf("%s: %s → %s", path, show(a), show(b)))
		}
	default:
		if !reflect.DeepEqual(a.Interface(), b.Interface()) {
			*out = append(*out, fmt.Sprintf("%s: %s → %s", path, show(a), show(b)))
		}
	}
}

func diffSchedules(out *[]string, path string, a, b []Schedule) {
	byName := func(s []Schedule) map[string]Schedule {
		m := make(map[string]Schedule, len(s))
		for _, x := range s {
			m[x.Name] = x
		}
		return m
	}
	am, bm := byName(a), byName(b)
	for _, x := range a {
		if _, ok := bm[x.Name]; !ok {
			*out = append(*out, fmt.Sprintf("%s: removed %q", path, x.Name))
		}
	}
	for _, x := range b {
		old, ok := am[x.Name]
		if !ok {
			*out = append(*out, fmt.Sprintf("%s: added %q", path, x.Name))
			continue
		}
		diffValue(out, fmt.Sprintf("%s[%s]", path, x.Name), reflect.ValueOf(old), reflect.ValueOf(x))
	}
}

// show formats a value for Diff.
func show(v reflect.Value) string {
	if !v.IsValid() {
		return "none"
	}
	switch x := v.Interface().(type) {
	case Duration:
		return x.String()
	case string:
		return strconv.Quote(x)
	case Mode:
		return string(x)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case []string:
		return fmt.Sprintf("%q", x)
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return "none"
		}
		return show(v.Elem())
	case reflect.Struct:
		t := v.Type()
		parts := make([]string, 0, t.NumField())
		for i := 0; i < t.NumField(); i++ {
			f := v.Field(i)
			if f.IsZero() || (f.Kind() == reflect.Slice && f.Len() == 0) {
				continue
			}
			parts = append(parts, yamlName(t.Field(i))+": "+show(f))
		}
		return "{" + strings.Join(parts, ", ") + "}"
	case reflect.Map:
		return fmt.Sprintf("%v", v.Interface())
	}
	return fmt.Sprint(v.Interface())
}
