#!/usr/bin/env python3
"""Writes the differential ABI test's fixture: C functions with random signatures.

Every function takes a random mix of scalars of every width, floats and
doubles interleaved with integers, `float _Complex` and `double _Complex`,
pointers (raw addresses) and strings, nested structs (1 to ~40 bytes),
unions, arrays inside structs, packed and over-aligned structs and members
(`aligned(N)` and `packed` on a struct or on one member), bitfields named
and unnamed (up to 16 parameters, some with a variadic tail), and
returns a value computed from every input: a 64-bit hash, a scalar derived
from it (a pointer made of it, or one of a fixed set of static strings), or
a struct or union filled from it. Pointers and strings appear as parameters,
variadic arguments, struct and union members, array elements and results.

Outputs (all deterministic for a given --seed and --count):
  abi_cases.h    the declarations, plain C without preprocessor lines, which
                 the test also hands to ffid's ParseDeclarations;
  abi_cases.c    the functions (a shared library the daemon loads);
  abi_direct.c   for each function a thunk that calls it directly with the
                 case's arguments (compiled into the test: the compiler's
                 caller is the reference);
  abi_cases.inc  the C++ table: symbol, the arguments and variadic types as
                 CallRequest text format, the thunk.

Python 3 standard library only.
"""

import argparse
import os
import random
import struct
import sys

# name, size, alignment, kind ('s' signed, 'u' unsigned, 'f' float, 'd'
# double, 'x' long double, 'b' bool, 'F' float _Complex, 'D' double
# _Complex, 'p' void *, 'z' const char *).
SCALARS = [
    ("int8_t", 1, 1, "s"), ("uint8_t", 1, 1, "u"),
    ("int16_t", 2, 2, "s"), ("uint16_t", 2, 2, "u"),
    ("int32_t", 4, 4, "s"), ("uint32_t", 4, 4, "u"),
    ("int64_t", 8, 8, "s"), ("uint64_t", 8, 8, "u"),
    ("char", 1, 1, "s"), ("signed char", 1, 1, "s"),
    ("unsigned char", 1, 1, "u"), ("short", 2, 2, "s"),
    ("unsigned short", 2, 2, "u"), ("int", 4, 4, "s"),
    ("unsigned int", 4, 4, "u"), ("long", 8, 8, "s"),
    ("unsigned long", 8, 8, "u"), ("long long", 8, 8, "s"),
    ("unsigned long long", 8, 8, "u"), ("size_t", 8, 8, "u"),
    ("float", 4, 4, "f"), ("double", 8, 8, "d"),
    ("_Bool", 1, 1, "b"),
    ("float _Complex", 8, 4, "F"), ("double _Complex", 16, 8, "D"),
]
# Pointers are raw addresses made of the hash (never followed); a string
# result or member is one of STRINGS (static, so the daemon's worker and the
# test process each follow it in their own copy of the fixture).
POINTERS = [("void *", 8, 8, "p"), ("const char *", 8, 8, "z")]
SCALAR_BY_NAME = {s[0]: s for s in SCALARS + POINTERS}
# Floating types come up more often: they are where classification differs.
WEIGHTED = [s[0] for s in SCALARS] + ["float", "double"] * 5
LONG_DOUBLE = ("long double", 16, 16, "x")
STRINGS = ["", "a", "xyz", "hello, world", "0123456789abcdef", "-_ 9",
           "caf\u00e9", "\u00fcber"]
BITFIELD_TYPES = ["int", "unsigned int", "long long", "unsigned long long",
                  "short", "unsigned short", "unsigned char", "char"]


class Scalar:
    def __init__(self, name):
        info = LONG_DOUBLE if name == "long double" else SCALAR_BY_NAME[name]
        self.name, self.size, self.align, self.kind = info

    def c(self):
        return self.name


class Array:
    def __init__(self, element, length):
        self.element, self.length = element, length
        self.size = element.size * length
        self.align = element.align


class Member:
    def __init__(self, name, type_, bits=0):
        self.name, self.type, self.bits = name, type_, bits
        # Member-level __attribute__((aligned(N))) and ((packed)).
        self.aligned, self.packed = 0, False


class Record:
    def __init__(self, tag, is_union, members, packed, aligned):
        self.tag, self.is_union, self.members = tag, is_union, members
        self.packed, self.aligned = packed, aligned
        # A rough size (no bitfield packing): enough to keep records small.
        sizes = [m.type.size for m in members]
        self.size = max(sizes) if is_union else sum(sizes)
        self.align = 1 if packed else max(m.type.align for m in members)
        if aligned:
            self.align = max(self.align, aligned)
        # The member a union value sets (and its hash reads).
        self.active = 0

    def c(self):
        return ("union " if self.is_union else "struct ") + self.tag


def contains_union(type_):
    if isinstance(type_, Array):
        return contains_union(type_.element)
    if isinstance(type_, Record):
        return type_.is_union or any(contains_union(m.type)
                                     for m in type_.members)
    return False


def contains_string(type_):
    if isinstance(type_, Array):
        return contains_string(type_.element)
    if isinstance(type_, Record):
        return any(contains_string(m.type) for m in type_.members)
    return type_.kind == "z"


def spell(type_, name):
    """C declaration of `name` with type `type_`."""
    if isinstance(type_, Array):
        return f"{spell(type_.element, name)}[{type_.length}]"
    return f"{type_.c()} {name}"


class Generator:
    def __init__(self, rng):
        self.rng = rng
        self.records = []

    # -- types ------------------------------------------------------------

    def scalar(self, long_double=True, pointers=False):
        if long_double and self.rng.random() < 0.02:
            return Scalar("long double")
        if pointers and self.rng.random() < 0.1:
            return Scalar(self.rng.choice(POINTERS)[0])
        return Scalar(self.rng.choice(WEIGHTED))

    def record(self, depth=0):
        rng = self.rng
        is_union = rng.random() < 0.15
        packed = not is_union and rng.random() < 0.15
        aligned = 0
        if not packed and rng.random() < 0.05:
            aligned = rng.choice([8, 16])
        budget = rng.choice([1, 2, 4, 6, 8, 12, 16, 20, 24, 32, 40])
        members = []
        size = 0
        use_bits = not is_union and rng.random() < 0.15
        while True:
            r = rng.random()
            name = f"m{len(members)}"
            if use_bits and r < 0.3:
                base = Scalar(rng.choice(BITFIELD_TYPES))
                width = rng.randint(1, base.size * 8)
                member = Member(name, base, width)
                if members and rng.random() < 0.2:
                    # Unnamed: padding, or with width 0 a new storage unit.
                    member = Member("", base, rng.choice([0, width]))
            elif r < 0.12 and depth < 2 and self.records:
                member = Member(name, rng.choice(self.records))
            elif r < 0.2 and depth < 3:
                member = Member(name, self.record(depth + 1))
            elif r < 0.32:
                member = Member(name, Array(self.scalar(long_double=False,
                                                        pointers=True),
                                            rng.randint(1, 4)))
            else:
                member = Member(name, self.scalar(pointers=True))
            r = rng.random()
            if r < 0.06:
                # Member-level aligned(N): raises the member's alignment
                # (a bitfield starts at the next multiple of N bytes).
                member.aligned = rng.choice([1, 2, 4, 8, 16])
            elif r < 0.09 and not is_union and not packed:
                member.packed = True
            if members and size + member.type.size > budget:
                break
            members.append(member)
            size += member.type.size
            if is_union and len(members) >= 3:
                break
            if len(members) >= 12:
                break
        record = Record(f"s{len(self.records)}", is_union, members, packed,
                        aligned)
        if is_union:
            record.active = rng.randrange(len(members))
        self.records.append(record)
        return record

    def param_type(self):
        r = self.rng.random()
        if r < 0.35:
            return self.record()
        if r < 0.45 and self.records:
            return self.rng.choice(self.records)
        return self.scalar(pointers=True)

    # -- values -----------------------------------------------------------

    def scalar_value(self, s, bits=0):
        """(C expression, Value text) for a random value of scalar `s`."""
        rng = self.rng
        if s.kind in "su":
            width = bits or s.size * 8
            if s.kind == "s":
                v = rng.randint(-(1 << (width - 1)), (1 << (width - 1)) - 1)
            else:
                v = rng.randint(0, (1 << width) - 1)
            if rng.random() < 0.2:
                low = -(1 << (width - 1)) if s.kind == "s" else 0
                high = ((1 << (width - 1)) if s.kind == "s"
                        else (1 << width)) - 1
                v = rng.choice([x for x in (0, 1, -1) if low <= x <= high])
            if v == -(1 << 63):
                c = "(-9223372036854775807LL - 1)"
            elif v < 0:
                c = f"({v}LL)"
            else:
                c = f"{v}ULL"
            text = (f"int_value: {v}" if s.kind == "s"
                    else f"uint_value: {v}")
            return f"({s.name}){c}", text
        if s.kind == "b":
            v = rng.random() < 0.5
            return ("1" if v else "0"), f"bool_value: {'true' if v else 'false'}"
        if s.kind in "FD":
            part = Scalar("float" if s.kind == "F" else "double")
            (re_c, re_t), (im_c, im_t) = (self.scalar_value(part),
                                          self.scalar_value(part))
            return (f"__builtin_complex(({part.name}){re_c}, "
                    f"({part.name}){im_c})",
                    f"array_value {{ elements {{ {re_t} }} "
                    f"elements {{ {im_t} }} }}")
        if s.kind == "p":
            v = rng.choice([0, rng.randint(1, (1 << 47) - 1)])
            if v == 0:
                return "(void *)0", "null_value: NULL_VALUE_UNSPECIFIED"
            return f"(void *){v}ULL", f"pointer_value {{ address: {v} }}"
        if s.kind == "z":
            length = rng.randint(0, 12)
            text = "".join(rng.choice("abcxyz019 _-") for _ in range(length))
            return f'"{text}"', f'string_value: "{text}"'
        if s.kind == "f":
            v = rng.randint(-(1 << 20), 1 << 20) / 8.0
        else:
            v = rng.randint(-(1 << 40), 1 << 40) / 1024.0
        # Hexadecimal in C: exact for float, double and long double alike.
        suffix = "f" if s.kind == "f" else ("L" if s.kind == "x" else "")
        return f"{v.hex()}{suffix}", f"double_value: {repr(v)}"

    def value(self, type_):
        """(C initializer, Value text) for a random value of `type_`."""
        if isinstance(type_, Scalar):
            return self.scalar_value(type_)
        if isinstance(type_, Array):
            cs, texts = [], []
            for _ in range(type_.length):
                c, t = self.value(type_.element)
                cs.append(c)
                texts.append(f"elements {{ {t} }}")
            return ("{" + ", ".join(cs) + "}",
                    "array_value { " + " ".join(texts) + " }")
        members = type_.members
        if type_.is_union:
            members = [members[type_.active]]
        cs, texts = [], []
        for m in members:
            if not m.name:
                continue  # an unnamed bitfield holds no value
            if m.bits:
                c, t = self.scalar_value(m.type, m.bits)
            else:
                c, t = self.value(m.type)
            cs.append(f".{m.name} = {c}")
            texts.append(f'fields {{ key: "{m.name}" value {{ {t} }} }}')
        return ("{" + ", ".join(cs) + "}",
                "record_value { " + " ".join(texts) + " }")


# -- C text ------------------------------------------------------------------

def record_definition(record):
    lines = []
    for m in record.members:
        member_attributes = []
        if m.aligned:
            member_attributes.append(f"aligned({m.aligned})")
        if m.packed:
            member_attributes.append("packed")
        suffix = (f" __attribute__(({', '.join(member_attributes)}))"
                  if member_attributes else "")
        if not m.name:
            lines.append(f"{m.type.c()} : {m.bits}{suffix};")
            continue
        bits = f" : {m.bits}" if m.bits else ""
        lines.append(f"{spell(m.type, m.name)}{bits}{suffix};")
    attributes = []
    if record.packed:
        attributes.append("packed")
    if record.aligned:
        attributes.append(f"aligned({record.aligned})")
    attribute = (f" __attribute__(({', '.join(attributes)}))"
                 if attributes else "")
    return f"{record.c()} {{ {' '.join(lines)} }}{attribute};"


def hash_statements(type_, expr, out):
    """Statements mixing every meaningful byte of `expr` into h."""
    if isinstance(type_, Scalar):
        if type_.kind == "f":
            out.append(f"h = abi_mix_f(h, {expr});")
        elif type_.kind == "d":
            out.append(f"h = abi_mix_d(h, {expr});")
        elif type_.kind == "x":
            out.append(f"h = abi_mix_ld(h, {expr});")
        elif type_.kind == "F":
            out.append(f"h = abi_mix_f(abi_mix_f(h, __real__ ({expr})), "
                       f"__imag__ ({expr}));")
        elif type_.kind == "D":
            out.append(f"h = abi_mix_d(abi_mix_d(h, __real__ ({expr})), "
                       f"__imag__ ({expr}));")
        elif type_.kind == "p":
            out.append(f"h = abi_mix(h, (uint64_t)(uintptr_t)({expr}));")
        elif type_.kind == "z":
            out.append(f"h = abi_mix_s(h, {expr});")
        else:
            out.append(f"h = abi_mix(h, (uint64_t)({expr}));")
        return
    if isinstance(type_, Array):
        for i in range(type_.length):
            hash_statements(type_.element, f"{expr}[{i}]", out)
        return
    members = type_.members
    if type_.is_union:
        members = [members[type_.active]]
    for m in members:
        if not m.name:
            continue
        if m.bits:
            out.append(f"h = abi_mix(h, (uint64_t)({expr}.{m.name}));")
        else:
            hash_statements(m.type, f"{expr}.{m.name}", out)


def fill_statements(type_, expr, out):
    """Statements setting every member of `expr` from the running hash h."""
    if isinstance(type_, Scalar):
        if type_.kind == "f":
            out.append(f"{expr} = (float)(int32_t)(h & 0xfffff) / 8.0f;")
        elif type_.kind in "dx":
            cast = "long double" if type_.kind == "x" else "double"
            out.append(f"{expr} = ({cast})(int64_t)(h >> 20) / 1024.0;")
        elif type_.kind == "b":
            out.append(f"{expr} = (h >> 7) & 1;")
        elif type_.kind == "p":
            out.append(f"{expr} = (void *)(uintptr_t)h;")
        elif type_.kind == "z":
            # One in nine is NULL.
            out.append(f"{expr} = abi_strings[h % {len(STRINGS) + 1}];")
        elif type_.kind in "FD":
            part = "float" if type_.kind == "F" else "double"
            out.append(f"__real__ {expr} = ({part})(int32_t)(h & 0xfffff) / 8;")
            out.append(f"__imag__ {expr} = ({part})(int32_t)(h >> 44) / 4;")
        else:
            out.append(f"{expr} = ({type_.name})h;")
        out.append("h = abi_mix(h, 0x9e37);")
        return
    if isinstance(type_, Array):
        for i in range(type_.length):
            fill_statements(type_.element, f"{expr}[{i}]", out)
        return
    members = type_.members
    if type_.is_union:
        members = [members[type_.active]]
    for m in members:
        if not m.name:
            continue
        if m.bits:
            out.append(f"{expr}.{m.name} = h;")
            out.append("h = abi_mix(h, 0x9e37);")
        else:
            fill_statements(m.type, f"{expr}.{m.name}", out)


def promoted(type_):
    """The type a variadic argument of `type_` arrives as."""
    if isinstance(type_, Scalar):
        if type_.kind == "f":
            return Scalar("double")
        if type_.kind in "sub" and type_.size < 4:
            return Scalar("int")
    return type_


PRELUDE_H = """/* Generated by tests/abi/gen_abi_cases.py: do not edit. */
"""

PRELUDE_C = """/* Generated by tests/abi/gen_abi_cases.py: do not edit. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#pragma GCC visibility push(default)
#include "abi_cases.h"

static const char *const abi_strings[] = {
%s, NULL};

static uint64_t abi_mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
  h *= 0xff51afd7ed558ccdULL;
  return h ^ (h >> 33);
}
static uint64_t abi_mix_f(uint64_t h, float f) {
  uint32_t bits;
  memcpy(&bits, &f, sizeof(bits));
  return abi_mix(h, bits);
}
static uint64_t abi_mix_d(uint64_t h, double d) {
  uint64_t bits;
  memcpy(&bits, &d, sizeof(bits));
  return abi_mix(h, bits);
}
static uint64_t abi_mix_s(uint64_t h, const char *s) {
  if (s == NULL) return abi_mix(h, 0x5a5a);
  for (; *s != '\\0'; ++s) h = abi_mix(h, (unsigned char)*s);
  return abi_mix(h, 0xa5);
}
static uint64_t abi_mix_ld(uint64_t h, long double x) {
  unsigned char bytes[10];
  uint64_t low = 0, high = 0;
  memcpy(bytes, &x, sizeof(bytes));
  memcpy(&low, bytes, 8);
  memcpy(&high, bytes + 8, 2);
  return abi_mix(abi_mix(h, low), high);
}
"""


def generate(count, seed, max_params=16):
    rng = random.Random(seed)
    gen = Generator(rng)
    functions = []
    for index in range(count):
        nparams = rng.choice([0, 1, 1, 2, 2, 3, 3, 4, 5, 6, 7, 8, 10, 12, 14,
                              16])
        nparams = min(nparams, max_params)
        variadic = max_params > 1 and rng.random() < 0.15
        fixed = [gen.param_type() for _ in range(nparams)]
        tail = []
        if variadic:
            # va_start wants a last named parameter that promotes to itself.
            fixed = fixed[:15] + [Scalar("int")]
            for _ in range(rng.randint(1, min(6, 16 - len(fixed)) or 1)):
                r = rng.random()
                if r < 0.2 and gen.records:
                    tail.append(rng.choice(gen.records))
                else:
                    tail.append(gen.scalar(pointers=True))
        r = rng.random()
        if r < 0.35:
            ret = Scalar("uint64_t")
        elif r < 0.6:
            ret = gen.scalar(pointers=True)
        elif r < 0.95:
            # Union bytes beyond the member that was set are unspecified, so
            # a result may be a union only at the top, with no union inside
            # the member the function sets. A string in a union result is
            # its address (not followed), which differs between the worker
            # and the test process, so the member set holds no string.
            ret = gen.record()
            for _ in range(8):
                inner = ([ret.members[ret.active]] if ret.is_union
                         else ret.members)
                if not any(contains_union(m.type) or
                           (ret.is_union and contains_string(m.type))
                           for m in inner):
                    break
                ret = gen.record()
            else:
                ret = Scalar("uint64_t")
        else:
            ret = None  # void: the hash goes to a global
        functions.append((f"abi_f{index}", ret, fixed, tail))
    return gen, functions


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--seed", type=int, default=20261129)
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--max-params", type=int, default=16,
                        help="fewer parameters (and no variadic tail below "
                        "2) to narrow a failure down")
    args = parser.parse_args(argv)
    gen, functions = generate(args.count, args.seed, args.max_params)
    rng = random.Random(args.seed * 7 + 1)
    gen.rng = rng  # argument values come from their own stream

    header = [PRELUDE_H]
    for record in gen.records:
        header.append(record_definition(record))
    header.append("extern uint64_t abi_last_hash;")
    strings = ", ".join(c_string(text) for text in STRINGS)
    source = [PRELUDE_C % strings, "uint64_t abi_last_hash;"]
    direct = ["/* Generated by tests/abi/gen_abi_cases.py: do not edit. */",
              "#include <stdint.h>", "#include <string.h>",
              '#include "abi_cases.h"']
    table = []
    thunks = []

    for name, ret, fixed, tail in functions:
        params = [spell(t, f"p{i}") for i, t in enumerate(fixed)]
        if tail:
            params.append("...")
        ret_c = "void" if ret is None else ret.c()
        prototype = f"{ret_c} {name}({', '.join(params) or 'void'})"
        header.append(prototype + ";")

        body = [prototype + " {", f"  uint64_t h = {len(fixed)}u;"]
        stmts = []
        for i, t in enumerate(fixed):
            hash_statements(t, f"p{i}", stmts)
        if tail:
            stmts.append("va_list ap;")
            stmts.append(f"va_start(ap, p{len(fixed) - 1});")
            for j, t in enumerate(tail):
                p = promoted(t)
                stmts.append(f"{{ {p.c()} v = va_arg(ap, {p.c()}); "
                             f"{' '.join(hs(p, 'v'))} }}")
            stmts.append("va_end(ap);")
        body += ["  " + s for s in stmts]
        if ret is None:
            body.append("  abi_last_hash = h;")
        elif isinstance(ret, Scalar) and ret.name == "uint64_t":
            body.append("  return h;")
        else:
            body.append(f"  {ret.c()} r;")
            body.append("  memset(&r, 0, sizeof(r));")
            fill = []
            fill_statements(ret, "r", fill)
            body += ["  " + s for s in fill]
            body.append("  return r;")
        body.append("}")
        source.append("\n".join(body))

        # The call's arguments, in C and as CallRequest text.
        cs, texts = [], []
        for t in fixed:
            c, text = gen.value(t)
            if not isinstance(t, Scalar):
                c = f"({t.c()}){c}"
            cs.append(c)
            texts.append(f"arguments {{ {text} }}")
        for t in tail:
            c, text = gen.value(t)
            if isinstance(t, Scalar):
                # The caller promotes; the callee reads the promoted type.
                c = f"({t.c()})({c})"
            else:
                c = f"({t.c()}){c}"
            cs.append(c)
            texts.append(f"arguments {{ {text} }}")
            texts.append(f'variadic_types {{ named: "{t.c()}" }}')
        thunk = [f"void {name}_direct(void *out) {{"]
        call = f"{name}({', '.join(cs)})"
        if ret is None:
            thunk.append(f"  {call};")
            thunk.append("  memcpy(out, &abi_last_hash, sizeof(abi_last_hash));")
        else:
            thunk.append(f"  {ret.c()} r = {call};")
            thunk.append("  memcpy(out, &r, sizeof(r));")
        thunk.append("}")
        direct.append("\n".join(thunk))
        text = " ".join(texts).replace("\\", "\\\\").replace('"', '\\"')
        # For a union result only the member the function set is compared
        # (the rest of its bytes are unspecified).
        member = (ret.members[ret.active].name
                  if isinstance(ret, Record) and ret.is_union else "")
        table.append(f'{{"{name}", "{text}", &{name}_direct, "{member}"}},')
        thunks.append(f"void {name}_direct(void *out);")

    os.makedirs(args.out, exist_ok=True)
    files = {
        "abi_cases.h": "\n".join(header) + "\n",
        "abi_cases.c": "\n\n".join(source) + "\n\n#pragma GCC visibility pop\n",
        "abi_direct.c": "\n\n".join(direct) + "\n",
        "abi_cases.inc": (
            "// Generated by tests/abi/gen_abi_cases.py: do not edit.\n"
            "// Needs `struct AbiCase { const char* symbol; const char* "
            "call; void (*direct)(void*); const char* union_member; };`\n"
            'extern "C" {\n' + "\n".join(thunks) + "\n}\n"
            "const AbiCase kAbiCases[] = {\n" + "\n".join(table) + "\n};\n"),
    }
    for filename, text in files.items():
        path = os.path.join(args.out, filename)
        # Rewrite only on change, so the build does not recompile for nothing.
        try:
            with open(path) as f:
                if f.read() == text:
                    continue
        except OSError:
            pass
        with open(path, "w") as f:
            f.write(text)
    return 0


def c_string(text):
    """`text` as a C string literal of its UTF-8 bytes."""
    return '"' + "".join(chr(b) if 32 <= b < 127 and chr(b) not in '"\\'
                         else f"\\{b:03o}"
                         for b in text.encode()) + '"'


def hs(type_, expr):
    out = []
    hash_statements(type_, expr, out)
    return out


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
