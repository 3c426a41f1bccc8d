package graph

import (
	"context"
	"fmt"
	"reflect"
	"strings"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
)

// exactEnums refuses, as INVALID_INPUT, an enum value in the variables
// that is not spelt exactly as the schema has it. gqlparser's variable
// check compares enum values regardless of case, then the generated
// UnmarshalGQL refuses "metrics" for METRICS with an error the presenter
// can only call INTERNAL.
type exactEnums struct{ schema *ast.Schema }

func (exactEnums) ExtensionName() string { return "ExactEnums" }

func (e *exactEnums) Validate(s graphql.ExecutableSchema) error {
	e.schema = s.Schema()
	return nil
}

func (e *exactEnums) MutateOperationContext(_ context.Context, oc *graphql.OperationContext) *gqlerror.Error {
	if oc.Operation == nil {
		return nil
	}
	for _, d := range oc.Operation.VariableDefinitions {
		if err := e.check(d.Type, oc.Variables[d.Variable], "$"+d.Variable); err != nil {
			return &gqlerror.Error{Message: err.Error(), Extensions: map[string]any{"code": CodeInvalidInput}}
		}
	}
	return nil
}

// check walks v, a value of type t at path, down lists and input objects.
func (e *exactEnums) check(t *ast.Type, v any, path string) error {
	if v == nil || t == nil {
		return nil
	}
	if t.Elem != nil {
		// The variable check makes a single value a list of one, of its
		// own Go type ([]string).
		list := reflect.ValueOf(v)
		if list.Kind() != reflect.Slice {
			return e.check(t.Elem, v, path)
		}
		for i := range list.Len() {
			if err := e.check(t.Elem, list.Index(i).Interface(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		return nil
	}
	def := e.schema.Types[t.NamedType]
	if def == nil {
		return nil
	}
	switch def.Kind {
	case ast.Enum:
		s, ok := v.(string)
		if ok && def.EnumValues.ForName(s) == nil {
			names := make([]string, len(def.EnumValues))
			for i, ev := range def.EnumValues {
				names[i] = ev.Name
			}
			return fmt.Errorf("%s: %q is not a %s; one of %s", path, s, def.Name, strings.Join(names, ", "))
		}
	case ast.InputObject:
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		for _, f := range def.Fields {
			if err := e.check(f.Type, m[f.Name], path+"."+f.Name); err != nil {
				return err
			}
		}
	}
	return nil
}
