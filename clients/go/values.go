package ffid

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/big"
	"reflect"
	"sort"

	"github.com/ffid/ffid/clients/go/ffidpb"
	"google.golang.org/grpc/codes"
)

// Record is a struct or union value by member name; results of struct type
// are Records. A union takes exactly one member.
type Record = map[string]any

// Union is a union result (or a typed read of one): every member decoded
// from the same bytes, since only the caller knows which member is set, and
// the bytes themselves. A char * member is its address (a Pointer), not
// followed. Passed back as an argument, a Union is its Bytes, unchanged.
type Union struct {
	// Members holds each member's reading of Bytes, by name.
	Members Record
	// Bytes is the union's memory, sizeof(union) bytes.
	Bytes []byte
}

// LongDouble is a `long double` result at full precision (x87 80-bit
// extended on x86-64: 64 bits of mantissa, more than a float64's 53).
// Passed back as an argument, its Bytes are used, so nothing is lost.
type LongDouble struct {
	// Bytes is the value in memory order (16 bytes; the first 10 hold it).
	Bytes []byte
	// Approximate is the nearest float64 (an infinity beyond its range).
	Approximate float64
	// Decimal is the shortest decimal that reads back as exactly this value
	// ("0.33333333333333333334", "inf", "-nan").
	Decimal string
}

// Float64 is the nearest float64.
func (l LongDouble) Float64() float64 { return l.Approximate }

// String is the exact decimal.
func (l LongDouble) String() string { return l.Decimal }

// Typed pins the C type of a variadic argument: lib.Func("printf").Call(ctx,
// "%hd", ffid.As("short", 7)). For fixed parameters the declared type wins
// and Typed is just its Value.
type Typed struct {
	// Type is a C type name (over the session's types), e.g. "int",
	// "unsigned long", "double", "const char *".
	Type string
	// Value is the argument.
	Value any
}

// As returns a Typed argument.
func As(cType string, value any) Typed { return Typed{Type: cType, Value: value} }

// types expands named types (struct tags, typedefs) declared in a
// session's cdefs; nil when unknown.
type typeTable func(name string) *ffidpb.TypeDescriptor

// expand follows `named` types through the table.
func (t typeTable) expand(d *ffidpb.TypeDescriptor) *ffidpb.TypeDescriptor {
	for i := 0; d != nil && i < 16; i++ {
		name, ok := d.GetKind().(*ffidpb.TypeDescriptor_Named)
		if !ok {
			return d
		}
		if t == nil {
			return nil
		}
		d = t(name.Named)
	}
	return d
}

func isFloating(d *ffidpb.TypeDescriptor) bool {
	if d == nil {
		return false
	}
	switch d.GetScalar() {
	case ffidpb.ScalarKind_SCALAR_KIND_FLOAT, ffidpb.ScalarKind_SCALAR_KIND_DOUBLE,
		ffidpb.ScalarKind_SCALAR_KIND_LONG_DOUBLE:
		return d.GetKind() != nil && d.GetPointer() == nil
	}
	return false
}

// toValue converts a Go value to a Value for a place of type d (nil: the Go
// value alone decides). `what` names the place for messages.
func toValue(v any, d *ffidpb.TypeDescriptor, types typeTable, what string) (*ffidpb.Value, error) {
	d = types.expand(d)
	switch x := v.(type) {
	case nil:
		return &ffidpb.Value{Kind: &ffidpb.Value_NullValue{}}, nil
	case *ffidpb.Value:
		return x, nil
	case Typed:
		return toValue(x.Value, d, types, what)
	case Pointer:
		return &ffidpb.Value{Kind: &ffidpb.Value_PointerValue{PointerValue: x.proto()}}, nil
	case *Pointer:
		if x == nil {
			return &ffidpb.Value{Kind: &ffidpb.Value_NullValue{}}, nil
		}
		return &ffidpb.Value{Kind: &ffidpb.Value_PointerValue{PointerValue: x.proto()}}, nil
	case *Memory:
		if x == nil {
			return &ffidpb.Value{Kind: &ffidpb.Value_NullValue{}}, nil
		}
		return &ffidpb.Value{Kind: &ffidpb.Value_PointerValue{PointerValue: x.Pointer.proto()}}, nil
	case *Callback:
		if x == nil {
			return &ffidpb.Value{Kind: &ffidpb.Value_NullValue{}}, nil
		}
		return &ffidpb.Value{Kind: &ffidpb.Value_CallbackHandle{CallbackHandle: x.handle}}, nil
	case Union:
		return &ffidpb.Value{Kind: &ffidpb.Value_RecordValue{RecordValue: &ffidpb.RecordValue{UnionBytes: x.Bytes}}}, nil
	case *Union:
		if x == nil {
			return nil, clientError(ReasonTypeMismatch, codes.InvalidArgument, "%s: a nil *Union", what)
		}
		return toValue(*x, d, types, what)
	case LongDouble:
		ld := &ffidpb.LongDoubleValue{Bytes: x.Bytes, Decimal: x.Decimal, Approximate: x.Approximate}
		return &ffidpb.Value{Kind: &ffidpb.Value_LongDouble{LongDouble: ld}}, nil
	case bool:
		return &ffidpb.Value{Kind: &ffidpb.Value_BoolValue{BoolValue: x}}, nil
	case string:
		if d != nil && d.GetEnumType() != nil {
			return &ffidpb.Value{Kind: &ffidpb.Value_EnumValue{EnumValue: x}}, nil
		}
		return &ffidpb.Value{Kind: &ffidpb.Value_StringValue{StringValue: x}}, nil
	case []byte:
		return &ffidpb.Value{Kind: &ffidpb.Value_BytesValue{BytesValue: x}}, nil
	case float32:
		return floatValue(float64(x), d), nil
	case float64:
		return floatValue(x, d), nil
	case *big.Int:
		if x.IsInt64() {
			return &ffidpb.Value{Kind: &ffidpb.Value_IntValue{IntValue: x.Int64()}}, nil
		}
		if x.IsUint64() {
			return &ffidpb.Value{Kind: &ffidpb.Value_UintValue{UintValue: x.Uint64()}}, nil
		}
		return nil, clientError(ReasonValueOutOfRange, codes.InvalidArgument,
			"%s: %s does not fit in 64 bits", what, x)
	case map[string]any:
		record := &ffidpb.RecordValue{Fields: map[string]*ffidpb.Value{}}
		for name, member := range x {
			value, err := toValue(member, fieldType(d, name), types, what+"."+name)
			if err != nil {
				return nil, err
			}
			record.Fields[name] = value
		}
		return &ffidpb.Value{Kind: &ffidpb.Value_RecordValue{RecordValue: record}}, nil
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if isFloating(d) {
			return floatValue(float64(rv.Int()), d), nil
		}
		return &ffidpb.Value{Kind: &ffidpb.Value_IntValue{IntValue: rv.Int()}}, nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		if isFloating(d) {
			return floatValue(float64(rv.Uint()), d), nil
		}
		return &ffidpb.Value{Kind: &ffidpb.Value_UintValue{UintValue: rv.Uint()}}, nil
	case reflect.Slice, reflect.Array:
		var element *ffidpb.TypeDescriptor
		if d != nil && d.GetArray() != nil {
			element = d.GetArray().GetElement()
		}
		array := &ffidpb.ArrayValue{}
		for i := 0; i < rv.Len(); i++ {
			value, err := toValue(rv.Index(i).Interface(), element, types, fmt.Sprintf("%s[%d]", what, i))
			if err != nil {
				return nil, err
			}
			array.Elements = append(array.Elements, value)
		}
		return &ffidpb.Value{Kind: &ffidpb.Value_ArrayValue{ArrayValue: array}}, nil
	}
	return nil, clientError(ReasonTypeMismatch, codes.InvalidArgument,
		"%s: cannot pass a Go %T", what, v)
}

// floatValue is a double_value, or for `long double` its 16 bytes (an
// x87 80-bit extended value).
func floatValue(f float64, d *ffidpb.TypeDescriptor) *ffidpb.Value {
	if d != nil && d.GetScalar() == ffidpb.ScalarKind_SCALAR_KIND_LONG_DOUBLE && d.GetKind() != nil {
		return &ffidpb.Value{Kind: &ffidpb.Value_LongDoubleValue{LongDoubleValue: encodeLongDouble(f)}}
	}
	return &ffidpb.Value{Kind: &ffidpb.Value_DoubleValue{DoubleValue: f}}
}

// fieldType is the type of member `name` of record type d, or nil.
func fieldType(d *ffidpb.TypeDescriptor, name string) *ffidpb.TypeDescriptor {
	if d == nil || d.GetRecord() == nil {
		return nil
	}
	for _, field := range d.GetRecord().GetFields() {
		if field.GetName() == name {
			return field.GetType()
		}
	}
	return nil
}

// fromValue converts a result Value to Go: int64, uint64, float64, bool,
// string, []byte, nil (NULL or void), Pointer, Record, Union, LongDouble,
// []any, and for enums the constant's name (a string; an int64 for other
// values).
func fromValue(v *ffidpb.Value, s *Session) any {
	if v == nil {
		return nil
	}
	switch x := v.GetKind().(type) {
	case *ffidpb.Value_BoolValue:
		return x.BoolValue
	case *ffidpb.Value_IntValue:
		return x.IntValue
	case *ffidpb.Value_UintValue:
		return x.UintValue
	case *ffidpb.Value_DoubleValue:
		return x.DoubleValue
	case *ffidpb.Value_StringValue:
		return x.StringValue
	case *ffidpb.Value_BytesValue:
		return x.BytesValue
	case *ffidpb.Value_EnumValue:
		return x.EnumValue
	case *ffidpb.Value_LongDoubleValue:
		return decodeLongDouble(x.LongDoubleValue)
	case *ffidpb.Value_LongDouble:
		return LongDouble{Bytes: x.LongDouble.GetBytes(), Approximate: x.LongDouble.GetApproximate(),
			Decimal: x.LongDouble.GetDecimal()}
	case *ffidpb.Value_CallbackHandle:
		return &Callback{session: s, handle: x.CallbackHandle}
	case *ffidpb.Value_PointerValue:
		return pointerFrom(s, x.PointerValue)
	case *ffidpb.Value_RecordValue:
		record := Record{}
		names := make([]string, 0, len(x.RecordValue.GetFields()))
		for name := range x.RecordValue.GetFields() {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			record[name] = fromValue(x.RecordValue.GetFields()[name], s)
		}
		if union := x.RecordValue.GetUnionBytes(); len(union) > 0 {
			return Union{Members: record, Bytes: union}
		}
		return record
	case *ffidpb.Value_ArrayValue:
		list := make([]any, 0, len(x.ArrayValue.GetElements()))
		for _, element := range x.ArrayValue.GetElements() {
			list = append(list, fromValue(element, s))
		}
		return list
	}
	return nil
}

// variadicType is the C type a variadic Go argument is passed as, after
// C's default promotions.
func variadicType(v any) (*ffidpb.TypeDescriptor, error) {
	named := func(name string) *ffidpb.TypeDescriptor {
		return &ffidpb.TypeDescriptor{Kind: &ffidpb.TypeDescriptor_Named{Named: name}}
	}
	switch x := v.(type) {
	case Typed:
		return named(x.Type), nil
	case nil, Pointer, *Pointer, *Memory, *Callback:
		return named("void *"), nil
	case string:
		return named("const char *"), nil
	case bool, int8, int16, int32, uint8, uint16:
		return named("int"), nil
	case int, int64:
		return named("long long"), nil
	case uint32:
		return named("unsigned int"), nil
	case uint, uint64, uintptr:
		return named("unsigned long long"), nil
	case float32, float64:
		return named("double"), nil
	}
	return nil, clientError(ReasonTypeMismatch, codes.InvalidArgument,
		"cannot pass a Go %T as a variadic argument; give its C type with ffid.As", v)
}

// encodeLongDouble writes f as an x87 80-bit extended value in 16 bytes.
func encodeLongDouble(f float64) []byte {
	out := make([]byte, 16)
	bits := math.Float64bits(f)
	sign := uint16(bits>>63) << 15
	exponent := int((bits >> 52) & 0x7ff)
	fraction := bits & (1<<52 - 1)
	var mantissa uint64
	var e uint16
	switch {
	case exponent == 0 && fraction == 0:
	case exponent == 0x7ff:
		e = 0x7fff
		mantissa = 1<<63 | fraction<<11
	case exponent == 0: // subnormal double: normalize
		shift := 0
		for fraction&(1<<52) == 0 {
			fraction <<= 1
			shift++
		}
		e = uint16(1 - 1023 + 16383 - shift)
		mantissa = fraction << 11
	default:
		e = uint16(exponent - 1023 + 16383)
		mantissa = 1<<63 | fraction<<11
	}
	binary.LittleEndian.PutUint64(out, mantissa)
	binary.LittleEndian.PutUint16(out[8:], sign|e)
	return out
}

// decodeLongDouble reads an x87 80-bit extended value (rounded to float64).
func decodeLongDouble(b []byte) float64 {
	if len(b) < 10 {
		return math.NaN()
	}
	mantissa := binary.LittleEndian.Uint64(b)
	se := binary.LittleEndian.Uint16(b[8:])
	negative := se&0x8000 != 0
	e := int(se & 0x7fff)
	var f float64
	switch {
	case e == 0x7fff && mantissa<<1 == 0:
		f = math.Inf(1)
	case e == 0x7fff:
		return math.NaN()
	default:
		f = math.Ldexp(float64(mantissa), e-16383-63)
	}
	if negative {
		f = -f
	}
	return f
}
