#include "ffi/declaration_parser.h"

#include <sys/types.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "ffi/errors.h"
#include "ffi/types.h"

namespace ffid::ffi {
namespace {

// ---------------------------------------------------------------------------
// Tokens

enum class TokenKind {
  kIdentifier,
  kNumber,
  kCharacter,
  kString,
  kPunctuator,
  kEnd,
};

struct Token {
  TokenKind kind = TokenKind::kEnd;
  std::string text;
  int line = 1;
  int column = 1;
};

absl::Status ErrorAtPosition(int line, int column, absl::string_view message) {
  return InvalidArgumentError(
      v1::ERROR_REASON_DECLARATION_INVALID,
      absl::StrCat("line ", line, ", column ", column, ": ", message));
}

std::string Printable(char c) {
  if (absl::ascii_isprint(static_cast<unsigned char>(c))) {
    return std::string(1, c);
  }
  return absl::StrFormat("\\x%02x", static_cast<unsigned char>(c));
}

class Tokenizer {
 public:
  explicit Tokenizer(absl::string_view source) : source_(source) {}

  absl::StatusOr<std::vector<Token>> Run() {
    std::vector<Token> tokens;
    bool line_start = true;
    while (pos_ < source_.size()) {
      const char c = source_[pos_];
      if (c == '\n') {
        Advance();
        line_start = true;
        continue;
      }
      if (c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v') {
        Advance();
        continue;
      }
      if (c == '/' && Peek(1) == '/') {
        while (pos_ < source_.size() && source_[pos_] != '\n') Advance();
        continue;
      }
      if (c == '/' && Peek(1) == '*') {
        const int line = line_, column = column_;
        Advance(2);
        while (pos_ < source_.size() && !(source_[pos_] == '*' && Peek(1) == '/')) {
          Advance();
        }
        if (pos_ >= source_.size()) {
          return ErrorAtPosition(line, column,
                                 "unterminated comment: expected '*/'");
        }
        Advance(2);
        continue;
      }
      if (c == '#' && line_start) {
        return ErrorAtPosition(
            line_, column_,
            "preprocessor directives are not supported: pass declarations "
            "after preprocessing (no #include or #define)");
      }
      line_start = false;
      Token token;
      token.line = line_;
      token.column = column_;
      const size_t start = pos_;
      if (absl::ascii_isalpha(static_cast<unsigned char>(c)) || c == '_') {
        while (pos_ < source_.size() &&
               (absl::ascii_isalnum(static_cast<unsigned char>(source_[pos_])) ||
                source_[pos_] == '_')) {
          Advance();
        }
        token.kind = TokenKind::kIdentifier;
      } else if (absl::ascii_isdigit(static_cast<unsigned char>(c)) ||
                 (c == '.' &&
                  absl::ascii_isdigit(static_cast<unsigned char>(Peek(1))))) {
        while (pos_ < source_.size()) {
          const char d = source_[pos_];
          if ((d == '+' || d == '-') && pos_ > start &&
              (source_[pos_ - 1] == 'e' || source_[pos_ - 1] == 'E' ||
               source_[pos_ - 1] == 'p' || source_[pos_ - 1] == 'P')) {
            Advance();
          } else if (absl::ascii_isalnum(static_cast<unsigned char>(d)) ||
                     d == '.' || d == '_') {
            Advance();
          } else {
            break;
          }
        }
        token.kind = TokenKind::kNumber;
      } else if (c == '\'' || c == '"') {
        Advance();
        while (pos_ < source_.size() && source_[pos_] != c &&
               source_[pos_] != '\n') {
          if (source_[pos_] == '\\') Advance();
          Advance();
        }
        if (pos_ >= source_.size() || source_[pos_] != c) {
          return ErrorAtPosition(
              token.line, token.column,
              absl::StrCat("unterminated ",
                           c == '"' ? "string literal" : "character constant",
                           ": expected ", c == '"' ? "'\"'" : "\"'\""));
        }
        Advance();
        token.kind = c == '"' ? TokenKind::kString : TokenKind::kCharacter;
      } else if (c == '.' && Peek(1) == '.' && Peek(2) == '.') {
        Advance(3);
        token.kind = TokenKind::kPunctuator;
      } else if ((c == '<' && Peek(1) == '<') || (c == '>' && Peek(1) == '>')) {
        Advance(2);
        token.kind = TokenKind::kPunctuator;
      } else if (absl::string_view("()[]{};,*=:<>+-~!&|^/%?.").find(c) !=
                 absl::string_view::npos) {
        Advance();
        token.kind = TokenKind::kPunctuator;
      } else {
        return ErrorAtPosition(
            line_, column_,
            absl::StrCat("unexpected character '", Printable(c), "'"));
      }
      token.text = std::string(source_.substr(start, pos_ - start));
      tokens.push_back(std::move(token));
    }
    Token end;
    end.kind = TokenKind::kEnd;
    end.line = line_;
    end.column = column_;
    tokens.push_back(std::move(end));
    return tokens;
  }

 private:
  char Peek(size_t ahead) const {
    return pos_ + ahead < source_.size() ? source_[pos_ + ahead] : '\0';
  }
  void Advance(size_t count = 1) {
    for (size_t i = 0; i < count && pos_ < source_.size(); ++i) {
      if (source_[pos_] == '\n') {
        ++line_;
        column_ = 1;
      } else {
        ++column_;
      }
      ++pos_;
    }
  }

  absl::string_view source_;
  size_t pos_ = 0;
  int line_ = 1;
  int column_ = 1;
};

// How deeply declarations may nest (parentheses, parameter lists, structs
// in structs, operators): bounds the parser's recursion on hostile input.
constexpr int kMaxNesting = 64;
// How deeply a produced type may nest. Protobuf refuses to parse messages
// nested beyond 100 levels and each type level costs two or three, so a
// deeper type could be sent but never read back by a client.
constexpr int kMaxTypeDepth = 24;

// ---------------------------------------------------------------------------
// Types under construction

// A type as a declarator builds it: either an object type or a function type
// (which C only lets a declaration name or a pointer point at).
struct ParsedType {
  v1::TypeDescriptor descriptor;
  bool is_function = false;
  v1::FunctionType function;
  // An array without a size (`int a[]`), only valid as a parameter.
  bool unsized_array = false;
};

struct DeclaratorOp {
  enum Kind { kPointer, kArray, kFunction } kind = kPointer;
  bool is_const = false;
  bool unsized = false;
  uint64_t length = 0;
  v1::FunctionType function;
  Token token;
};

struct Declarator {
  std::string name;
  Token name_token;
  bool has_name = false;
  // Applied to the base type in order.
  std::vector<DeclaratorOp> ops;
};

template <typename T>
v1::ScalarKind FixedWidthKind() {
  static_assert(std::is_integral_v<T>);
  constexpr bool kSigned = std::is_signed_v<T>;
  switch (sizeof(T)) {
    case 1:
      return kSigned ? v1::SCALAR_KIND_INT8 : v1::SCALAR_KIND_UINT8;
    case 2:
      return kSigned ? v1::SCALAR_KIND_INT16 : v1::SCALAR_KIND_UINT16;
    case 4:
      return kSigned ? v1::SCALAR_KIND_INT32 : v1::SCALAR_KIND_UINT32;
    default:
      return kSigned ? v1::SCALAR_KIND_INT64 : v1::SCALAR_KIND_UINT64;
  }
}

// The typedef names every C program has from the standard headers.
const std::map<std::string, v1::ScalarKind>& BuiltinTypedefs() {
  static const auto* const kTypedefs = new std::map<std::string, v1::ScalarKind>{
      {"size_t", v1::SCALAR_KIND_SIZE_T},
      {"ssize_t", v1::SCALAR_KIND_SSIZE_T},
      {"intptr_t", v1::SCALAR_KIND_INTPTR_T},
      {"uintptr_t", v1::SCALAR_KIND_UINTPTR_T},
      {"ptrdiff_t", v1::SCALAR_KIND_PTRDIFF_T},
      {"int8_t", v1::SCALAR_KIND_INT8},
      {"uint8_t", v1::SCALAR_KIND_UINT8},
      {"int16_t", v1::SCALAR_KIND_INT16},
      {"uint16_t", v1::SCALAR_KIND_UINT16},
      {"int32_t", v1::SCALAR_KIND_INT32},
      {"uint32_t", v1::SCALAR_KIND_UINT32},
      {"int64_t", v1::SCALAR_KIND_INT64},
      {"uint64_t", v1::SCALAR_KIND_UINT64},
      {"wchar_t", v1::SCALAR_KIND_WCHAR_T},
      {"char16_t", v1::SCALAR_KIND_CHAR16_T},
      {"char32_t", v1::SCALAR_KIND_CHAR32_T},
      {"intmax_t", FixedWidthKind<intmax_t>()},
      {"uintmax_t", FixedWidthKind<uintmax_t>()},
      {"off_t", FixedWidthKind<off_t>()},
      {"time_t", FixedWidthKind<time_t>()},
      {"clock_t", FixedWidthKind<clock_t>()},
      {"pid_t", FixedWidthKind<pid_t>()},
      {"uid_t", FixedWidthKind<uid_t>()},
      {"gid_t", FixedWidthKind<gid_t>()},
      {"mode_t", FixedWidthKind<mode_t>()},
  };
  return *kTypedefs;
}

// Type specifier keywords, by the counter they bump.
enum Specifier {
  kVoid,
  kBool,
  kChar,
  kShort,
  kInt,
  kLong,
  kSigned,
  kUnsigned,
  kFloat,
  kDouble,
  kComplex,
  kNamed,  // a typedef name, struct, union or enum
  kSpecifierCount,
};

std::optional<Specifier> SpecifierKeyword(absl::string_view word) {
  static const auto* const kKeywords = new std::map<std::string, Specifier>{
      {"void", kVoid},         {"_Bool", kBool},          {"bool", kBool},
      {"char", kChar},         {"short", kShort},         {"int", kInt},
      {"long", kLong},         {"signed", kSigned},       {"__signed", kSigned},
      {"__signed__", kSigned}, {"unsigned", kUnsigned},   {"float", kFloat},
      {"double", kDouble},     {"_Complex", kComplex},    {"__complex__", kComplex},
  };
  auto it = kKeywords->find(std::string(word));
  if (it == kKeywords->end()) return std::nullopt;
  return it->second;
}

bool IsQualifier(absl::string_view word) {
  return word == "const" || word == "__const" || word == "__const__" ||
         word == "volatile" || word == "__volatile" || word == "__volatile__" ||
         word == "restrict" || word == "__restrict" || word == "__restrict__" ||
         word == "_Atomic";
}

bool IsConstQualifier(absl::string_view word) {
  return word == "const" || word == "__const" || word == "__const__";
}

bool IsAttributeKeyword(absl::string_view word) {
  return word == "__attribute__" || word == "__attribute";
}

bool IsIgnoredKeyword(absl::string_view word) {
  return word == "__extension__" || word == "inline" || word == "__inline" ||
         word == "__inline__" || word == "_Noreturn" || word == "noreturn";
}

// The combinations of type specifiers C allows, as the most of each a
// combination may hold; a prefix is valid if some combination covers it.
bool CoveredBySomeCombination(const int counts[kSpecifierCount]) {
  using Combination = std::array<int, kSpecifierCount>;
  static const auto* const kCombinations = new std::vector<Combination>{
      //  void bool char short int long signed unsigned float double cplx named
      {1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
      {0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
      {0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0},
      {0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0},
      {0, 0, 0, 1, 1, 0, 1, 0, 0, 0, 0, 0},
      {0, 0, 0, 1, 1, 0, 0, 1, 0, 0, 0, 0},
      {0, 0, 0, 0, 1, 2, 1, 0, 0, 0, 0, 0},
      {0, 0, 0, 0, 1, 2, 0, 1, 0, 0, 0, 0},
      {0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0},
      {0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0},
      {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1},
  };
  for (const Combination& combination : *kCombinations) {
    bool covered = true;
    for (int i = 0; i < kSpecifierCount; ++i) {
      if (counts[i] > combination[i]) covered = false;
    }
    if (covered) return true;
  }
  return false;
}

// Attributes ffid understands; the rest are skipped.
struct Attributes {
  bool packed = false;
  // The largest aligned(N) given (GCC keeps the largest); 0 for none.
  uint32_t aligned = 0;
  // Where aligned(N) was given, for a message refusing it.
  Token aligned_token;
};

struct Specifiers {
  Token first;
  // Attributes and `_Alignas` among the specifiers: they apply to every
  // declarator of the declaration.
  Attributes attributes;
  bool is_typedef = false;
  bool is_const = false;
  int counts[kSpecifierCount] = {};
  std::vector<std::string> spelled;
  // For kNamed: the type it names.
  ParsedType named;
  // Whether a struct, union or enum was defined or declared here (so a
  // declaration without declarators still declares something).
  bool declares_tag = false;
};


// Replaces records behind pointers by their tag, so a descriptor's depth
// grows with by-value nesting only, however the structs point at each other.
void StripPointees(v1::TypeDescriptor& d);

void StripFunction(v1::FunctionType& function) {
  if (function.has_return_type()) StripPointees(*function.mutable_return_type());
  for (v1::Parameter& parameter : *function.mutable_parameters()) {
    StripPointees(*parameter.mutable_type());
  }
}

void StripBehindPointer(v1::TypeDescriptor& d) {
  if (d.has_record() && !d.record().name().empty()) {
    const bool is_const = d.is_const();
    std::string name = absl::StrCat(
        d.record().kind() == v1::RECORD_KIND_UNION ? "union " : "struct ",
        d.record().name());
    d.Clear();
    d.set_named(std::move(name));
    d.set_is_const(is_const);
    return;
  }
  StripPointees(d);
}

void StripPointees(v1::TypeDescriptor& d) {
  switch (d.kind_case()) {
    case v1::TypeDescriptor::kPointer:
      if (d.pointer().has_pointee()) {
        StripBehindPointer(*d.mutable_pointer()->mutable_pointee());
      }
      break;
    case v1::TypeDescriptor::kArray:
      StripPointees(*d.mutable_array()->mutable_element());
      break;
    case v1::TypeDescriptor::kRecord:
      for (v1::Field& field : *d.mutable_record()->mutable_fields()) {
        StripPointees(*field.mutable_type());
      }
      break;
    case v1::TypeDescriptor::kFunctionPointer:
      StripFunction(*d.mutable_function_pointer());
      break;
    default:
      break;
  }
}

int TypeDepth(const v1::TypeDescriptor& d);

int FunctionDepth(const v1::FunctionType& function) {
  int depth = function.has_return_type() ? TypeDepth(function.return_type()) : 0;
  for (const v1::Parameter& parameter : function.parameters()) {
    depth = std::max(depth, TypeDepth(parameter.type()));
  }
  return depth;
}

int TypeDepth(const v1::TypeDescriptor& d) {
  switch (d.kind_case()) {
    case v1::TypeDescriptor::kPointer:
      return 1 + (d.pointer().has_pointee() ? TypeDepth(d.pointer().pointee())
                                            : 0);
    case v1::TypeDescriptor::kArray:
      return 1 + TypeDepth(d.array().element());
    case v1::TypeDescriptor::kRecord: {
      int depth = 0;
      for (const v1::Field& field : d.record().fields()) {
        depth = std::max(depth, TypeDepth(field.type()));
      }
      return 1 + depth;
    }
    case v1::TypeDescriptor::kFunctionPointer:
      return 1 + FunctionDepth(d.function_pointer());
    default:
      return 1;
  }
}

bool IsIncomplete(const v1::TypeDescriptor& d) {
  return d.has_named() &&
         (absl::StartsWith(d.named(), "struct ") ||
          absl::StartsWith(d.named(), "union ") ||
          absl::StartsWith(d.named(), "enum "));
}

// ---------------------------------------------------------------------------
// The parser

class Parser {
 public:
  Parser(std::vector<Token> tokens, bool single_prototype)
      : tokens_(std::move(tokens)), single_prototype_(single_prototype) {}

  absl::Status AddKnown(const std::vector<v1::TypeDeclaration>& known) {
    for (const v1::TypeDeclaration& declaration : known) {
      absl::string_view name = declaration.name();
      if (absl::StartsWith(name, "struct ") || absl::StartsWith(name, "union ") ||
          absl::StartsWith(name, "enum ")) {
        tags_[std::string(name)] = declaration.type();
      } else {
        ParsedType type;
        type.descriptor = declaration.type();
        typedefs_[std::string(name)] = std::move(type);
      }
    }
    return absl::OkStatus();
  }

  absl::Status ParseAll(Declarations& out) {
    out_ = &out;
    while (Peek().kind != TokenKind::kEnd) {
      RETURN_IF_ERROR(ParseDeclaration());
    }
    return absl::OkStatus();
  }

  // A type name: specifiers and an abstract declarator ("int[16]",
  // "struct point *", "unsigned long").
  absl::StatusOr<v1::TypeDescriptor> ParseTypeName() {
    Declarations scratch;
    out_ = &scratch;
    if (Peek().kind == TokenKind::kEnd) {
      return ErrorAt(Peek(), "expected a type name such as 'int[16]', found "
                             "end of input");
    }
    ASSIGN_OR_RETURN(Specifiers specifiers, ParseSpecifiers(/*top_level=*/false));
    ASSIGN_OR_RETURN(Declarator declarator, ParseDeclarator(/*abstract=*/true));
    if (declarator.has_name) {
      return ErrorAt(declarator.name_token,
                     absl::StrCat("expected a type name without a declared "
                                  "name, found '",
                                  declarator.name, "'"));
    }
    ASSIGN_OR_RETURN(ParsedType type, Apply(specifiers, declarator));
    if (type.is_function) {
      return ErrorAt(specifiers.first,
                     "a function type is not a type of values; use a pointer "
                     "to it");
    }
    if (type.unsized_array) {
      return ErrorAt(specifiers.first, "an array type needs a length");
    }
    if (Peek().kind != TokenKind::kEnd) {
      return Expected("end of input after the type name");
    }
    return type.descriptor;
  }

  absl::StatusOr<v1::FunctionDeclaration> ParsePrototype() {
    Declarations scratch;
    out_ = &scratch;
    if (Peek().kind == TokenKind::kEnd) {
      return ErrorAt(Peek(), "expected a function prototype such as 'double "
                             "cos(double)', found end of input");
    }
    ASSIGN_OR_RETURN(Specifiers specifiers, ParseSpecifiers(/*top_level=*/true));
    if (specifiers.is_typedef) {
      return ErrorAt(specifiers.first,
                     "expected a function prototype, found a typedef");
    }
    ASSIGN_OR_RETURN(Declarator declarator,
                     ParseDeclarator(/*abstract=*/false));
    ASSIGN_OR_RETURN(ParsedType type, Apply(specifiers, declarator));
    if (!type.is_function) {
      return ErrorAt(declarator.name_token,
                     absl::StrCat("expected a function prototype such as "
                                  "'double cos(double)', found a declaration "
                                  "of '",
                                  declarator.name, "' with type '",
                                  TypeName(type.descriptor), "'"));
    }
    Attributes ignored;
    RETURN_IF_ERROR(ParseDeclarationSuffixes(ignored));
    Accept(";");
    if (Peek().kind != TokenKind::kEnd) {
      return Expected("end of input after the prototype");
    }
    v1::FunctionDeclaration declaration;
    declaration.set_name(declarator.name);
    *declaration.mutable_type() = std::move(type.function);
    return declaration;
  }

 private:
  // Counts one level of recursion for as long as it lives.
  class Nesting {
   public:
    explicit Nesting(Parser& parser) : parser_(parser) { ++parser_.depth_; }
    ~Nesting() { --parser_.depth_; }
    Nesting(const Nesting&) = delete;
    Nesting& operator=(const Nesting&) = delete;
    bool too_deep() const { return parser_.depth_ > kMaxNesting; }

   private:
    Parser& parser_;
  };

  absl::Status TooDeep() const {
    return ErrorAt(Peek(), absl::StrCat("the declaration nests more than ",
                                        kMaxNesting, " levels deep"));
  }

  // --- token helpers -------------------------------------------------------

  const Token& Peek(size_t ahead = 0) const {
    return tokens_[std::min(index_ + ahead, tokens_.size() - 1)];
  }
  const Token& Next() {
    const Token& token = Peek();
    if (index_ < tokens_.size() - 1) ++index_;
    return token;
  }
  static bool Is(const Token& token, absl::string_view punctuator) {
    return token.kind == TokenKind::kPunctuator && token.text == punctuator;
  }
  bool Accept(absl::string_view punctuator) {
    if (!Is(Peek(), punctuator)) return false;
    Next();
    return true;
  }
  static std::string Describe(const Token& token) {
    if (token.kind == TokenKind::kEnd) return "end of input";
    return absl::StrCat("'", token.text, "'");
  }
  absl::Status ErrorAt(const Token& token, absl::string_view message) const {
    return ErrorAtPosition(token.line, token.column, message);
  }
  absl::Status UnsupportedAt(const Token& token,
                             absl::string_view message) const {
    return MakeError(absl::StatusCode::kUnimplemented,
                     v1::ERROR_REASON_UNSUPPORTED,
                     absl::StrCat("line ", token.line, ", column ",
                                  token.column, ": ", message));
  }
  // "expected X, found 'Y'" at the next token.
  absl::Status Expected(absl::string_view what) const {
    return ErrorAt(Peek(),
                   absl::StrCat("expected ", what, ", found ", Describe(Peek())));
  }
  absl::Status Expect(absl::string_view punctuator, absl::string_view what) {
    if (Accept(punctuator)) return absl::OkStatus();
    return Expected(what);
  }

  bool IsTypeName(absl::string_view word) const {
    return typedefs_.count(std::string(word)) > 0 ||
           BuiltinTypedefs().count(std::string(word)) > 0 || word == "FILE";
  }

  // Words that can never name a declaration.
  static bool IsKeyword(absl::string_view word) {
    return SpecifierKeyword(word).has_value() || IsQualifier(word) ||
           word == "struct" || word == "union" || word == "enum" ||
           word == "extern" || word == "typedef" || word == "static" ||
           IsAttributeKeyword(word) || IsIgnoredKeyword(word);
  }

  // Whether `token` can start a declaration's specifiers.
  bool StartsSpecifiers(const Token& token) const {
    if (token.kind != TokenKind::kIdentifier) return false;
    const std::string& word = token.text;
    return SpecifierKeyword(word).has_value() || IsQualifier(word) ||
           word == "struct" || word == "union" || word == "enum" ||
           word == "extern" || word == "typedef" || IsAttributeKeyword(word) ||
           IsIgnoredKeyword(word) || IsTypeName(word);
  }

  // --- declarations --------------------------------------------------------

  absl::Status ParseDeclaration() {
    if (Accept(";")) return absl::OkStatus();  // a stray ';' is harmless
    ASSIGN_OR_RETURN(Specifiers specifiers, ParseSpecifiers(/*top_level=*/true));
    if (Accept(";")) {
      if (!specifiers.declares_tag) {
        return ErrorAt(specifiers.first,
                       "the declaration declares nothing: expected a name");
      }
      return absl::OkStatus();
    }
    while (true) {
      ASSIGN_OR_RETURN(Declarator declarator,
                       ParseDeclarator(/*abstract=*/false));
      Attributes attributes = specifiers.attributes;
      RETURN_IF_ERROR(ParseDeclarationSuffixes(attributes));
      ASSIGN_OR_RETURN(ParsedType type, Apply(specifiers, declarator));
      if (type.unsized_array) {
        return ErrorAt(declarator.name_token,
                       absl::StrCat("'", declarator.name,
                                    "' is an array without a size"));
      }
      if (specifiers.is_typedef && attributes.aligned != 0) {
        // A typedef would carry an alignment of its own into every use.
        return UnsupportedAt(
            attributes.aligned_token,
            absl::StrCat("aligned(", attributes.aligned, ") on the typedef '",
                         declarator.name,
                         "' is not supported: put it on the struct member "
                         "(int x __attribute__((aligned(",
                         attributes.aligned,
                         "))); or on the struct itself"));
      }
      if (specifiers.is_typedef) {
        RETURN_IF_ERROR(DefineTypedef(declarator, std::move(type)));
      } else if (type.is_function) {
        v1::FunctionDeclaration function;
        function.set_name(declarator.name);
        *function.mutable_type() = std::move(type.function);
        out_->functions.push_back(std::move(function));
      } else {
        if (single_prototype_) {
          return ErrorAt(declarator.name_token,
                         "expected a function prototype, found a variable");
        }
        if (IsIncomplete(type.descriptor) ||
            (type.descriptor.has_scalar() &&
             type.descriptor.scalar() == v1::SCALAR_KIND_VOID)) {
          return ErrorAt(declarator.name_token,
                         absl::StrCat("variable '", declarator.name,
                                      "' has incomplete type '",
                                      TypeName(type.descriptor), "'"));
        }
        v1::VariableDeclaration variable;
        variable.set_name(declarator.name);
        *variable.mutable_type() = std::move(type.descriptor);
        out_->variables.push_back(std::move(variable));
      }
      if (Accept(",")) continue;
      if (Is(Peek(), "{")) {
        return ErrorAt(Peek(),
                       "expected ';' after declaration, found '{' (function "
                       "definitions are not supported: declare the prototype "
                       "only)");
      }
      return Expect(";", "';' after declaration");
    }
  }

  absl::Status DefineTypedef(const Declarator& declarator, ParsedType type) {
    StripPointees(type.descriptor);
    if (type.is_function) StripFunction(type.function);
    auto existing = typedefs_.find(declarator.name);
    if (existing != typedefs_.end()) {
      if (existing->second.descriptor.SerializeAsString() !=
              type.descriptor.SerializeAsString() ||
          existing->second.is_function != type.is_function ||
          existing->second.function.SerializeAsString() !=
              type.function.SerializeAsString()) {
        return ErrorAt(declarator.name_token,
                       absl::StrCat("conflicting types for typedef '",
                                    declarator.name, "'"));
      }
      return absl::OkStatus();
    }
    v1::TypeDeclaration declaration;
    declaration.set_name(declarator.name);
    if (type.is_function) {
      // A typedef of a function type is only ever used through pointers.
      *declaration.mutable_type()->mutable_function_pointer() = type.function;
    } else {
      *declaration.mutable_type() = type.descriptor;
    }
    out_->types.push_back(std::move(declaration));
    typedefs_[declarator.name] = std::move(type);
    return absl::OkStatus();
  }

  // Attributes and asm labels after a declarator.
  // Attributes and asm labels after a declarator, collected into
  // `attributes`.
  absl::Status ParseDeclarationSuffixes(Attributes& attributes) {
    while (Peek().kind == TokenKind::kIdentifier) {
      const std::string& word = Peek().text;
      if (IsAttributeKeyword(word)) {
        RETURN_IF_ERROR(ParseAttribute(attributes));
      } else if (word == "__asm__" || word == "__asm" || word == "asm") {
        Next();
        RETURN_IF_ERROR(Expect("(", "'(' after 'asm'"));
        if (Peek().kind != TokenKind::kString) {
          return Expected("a string literal in 'asm'");
        }
        Next();
        RETURN_IF_ERROR(Expect(")", "')' after the asm label"));
      } else {
        break;
      }
    }
    return absl::OkStatus();
  }

  // `_Alignas(N)`: as aligned(N). `_Alignas(type)` is refused.
  absl::Status ParseAlignas(Attributes& attributes) {
    const Token keyword = Next();
    RETURN_IF_ERROR(Expect("(", absl::StrCat("'(' after '", keyword.text,
                                             "'")));
    if (StartsSpecifiers(Peek())) {
      return UnsupportedAt(keyword,
                           absl::StrCat(keyword.text, "(type) is not "
                                        "supported: write the alignment as a "
                                        "number, ", keyword.text, "(8)"));
    }
    ASSIGN_OR_RETURN(int64_t alignment, ParseConstant());
    if (alignment < 0 || (alignment & (alignment - 1)) != 0 ||
        alignment > (int64_t{1} << 28)) {
      return ErrorAt(keyword, absl::StrCat("the alignment ", alignment,
                                           " is not a power of two"));
    }
    // _Alignas(0) has no effect.
    attributes.aligned =
        std::max(attributes.aligned, static_cast<uint32_t>(alignment));
    if (alignment != 0) attributes.aligned_token = keyword;
    return Expect(")", absl::StrCat("')' after the alignment"));
  }

  absl::Status ParseAttribute(Attributes& attributes) {
    Next();  // __attribute__
    RETURN_IF_ERROR(Expect("(", "'((' after '__attribute__'"));
    RETURN_IF_ERROR(Expect("(", "'((' after '__attribute__'"));
    while (!Is(Peek(), ")")) {
      if (Peek().kind != TokenKind::kIdentifier) {
        return Expected("an attribute name");
      }
      const Token name = Next();
      if (name.text == "packed" || name.text == "__packed__") {
        attributes.packed = true;
      }
      if (Accept("(")) {
        if (name.text == "aligned" || name.text == "__aligned__") {
          ASSIGN_OR_RETURN(int64_t alignment, ParseConstant());
          if (alignment <= 0 || (alignment & (alignment - 1)) != 0 ||
              alignment > (int64_t{1} << 28)) {
            return ErrorAt(name, absl::StrCat("the alignment ", alignment,
                                              " is not a power of two"));
          }
          attributes.aligned =
              std::max(attributes.aligned, static_cast<uint32_t>(alignment));
          attributes.aligned_token = name;
          RETURN_IF_ERROR(Expect(")", "')' after the alignment"));
        } else {
          // Skip the arguments of an attribute ffid has no use for.
          int depth = 1;
          while (depth > 0) {
            if (Peek().kind == TokenKind::kEnd) return Expected("')'");
            if (Is(Peek(), "(")) ++depth;
            if (Is(Peek(), ")")) --depth;
            Next();
          }
        }
      } else if (name.text == "aligned" || name.text == "__aligned__") {
        // GCC's "largest useful alignment" on x86-64.
        attributes.aligned = std::max<uint32_t>(attributes.aligned, 16);
        attributes.aligned_token = name;
      }
      if (!Accept(",")) break;
    }
    RETURN_IF_ERROR(Expect(")", "'))' after the attribute list"));
    return Expect(")", "'))' after the attribute list");
  }

  // --- declaration specifiers ----------------------------------------------

  absl::Status AddSpecifier(Specifiers& specifiers, Specifier specifier,
                            const Token& token) {
    specifiers.counts[specifier]++;
    if (!CoveredBySomeCombination(specifiers.counts)) {
      return ErrorAt(token, absl::StrCat("cannot combine '", token.text,
                                         "' with '",
                                         absl::StrJoin(specifiers.spelled, " "),
                                         "'"));
    }
    specifiers.spelled.push_back(token.text);
    return absl::OkStatus();
  }

  absl::StatusOr<Specifiers> ParseSpecifiers(bool top_level) {
    Specifiers specifiers;
    specifiers.first = Peek();
    bool any_type = false;
    while (Peek().kind == TokenKind::kIdentifier) {
      const Token token = Peek();
      const std::string& word = token.text;
      if (word == "typedef") {
        if (!top_level || single_prototype_) {
          return ErrorAt(token, "'typedef' is not allowed here");
        }
        specifiers.is_typedef = true;
        Next();
      } else if (word == "extern") {
        Next();
      } else if (word == "static" || word == "register" || word == "auto" ||
                 word == "_Thread_local" || word == "__thread") {
        return UnsupportedAt(token, absl::StrCat("'", word,
                                                 "' declarations are not "
                                                 "supported"));
      } else if (IsQualifier(word)) {
        if (IsConstQualifier(word)) specifiers.is_const = true;
        Next();
      } else if (IsIgnoredKeyword(word)) {
        Next();
      } else if (IsAttributeKeyword(word)) {
        RETURN_IF_ERROR(ParseAttribute(specifiers.attributes));
      } else if (word == "_Alignas" || word == "alignas") {
        RETURN_IF_ERROR(ParseAlignas(specifiers.attributes));
      } else if (std::optional<Specifier> keyword = SpecifierKeyword(word)) {
        RETURN_IF_ERROR(AddSpecifier(specifiers, *keyword, token));
        any_type = true;
        Next();
      } else if (word == "struct" || word == "union" || word == "enum") {
        RETURN_IF_ERROR(AddSpecifier(specifiers, kNamed, token));
        if (word == "enum") {
          ASSIGN_OR_RETURN(specifiers.named.descriptor, ParseEnumSpecifier());
        } else {
          ASSIGN_OR_RETURN(specifiers.named.descriptor,
                           ParseRecordSpecifier(word == "union"));
        }
        specifiers.declares_tag = true;
        any_type = true;
      } else if (!any_type && IsTypeName(word)) {
        RETURN_IF_ERROR(AddSpecifier(specifiers, kNamed, token));
        specifiers.named = LookupTypedef(word);
        any_type = true;
        Next();
      } else {
        break;
      }
    }
    if (!any_type) {
      if (Peek().kind == TokenKind::kIdentifier &&
          (Peek(1).kind == TokenKind::kIdentifier || Is(Peek(1), "*") ||
           Is(Peek(1), ")") || Is(Peek(1), ",") || Is(Peek(1), "["))) {
        return ErrorAt(Peek(),
                       absl::StrCat("unknown type name '", Peek().text, "'"));
      }
      return Expected("a type");
    }
    if (specifiers.counts[kComplex] > 0 && specifiers.counts[kFloat] == 0 &&
        specifiers.counts[kDouble] == 0) {
      return ErrorAt(specifiers.first,
                     "'_Complex' needs 'float' or 'double'");
    }
    return specifiers;
  }

  ParsedType LookupTypedef(const std::string& name) {
    auto it = typedefs_.find(name);
    ParsedType type;
    if (it != typedefs_.end()) {
      type = it->second;
    } else if (name == "FILE") {
      // Opaque: only ever used through a pointer.
      type.descriptor.set_named("FILE");
    } else {
      type.descriptor.set_scalar(BuiltinTypedefs().at(name));
    }
    // A typedef'd pointer to a struct completed since gets the struct back.
    if (type.descriptor.has_pointer() && type.descriptor.pointer().has_pointee()) {
      CompleteTag(*type.descriptor.mutable_pointer()->mutable_pointee());
    }
    if (!type.is_function) CompleteTag(type.descriptor);
    return type;
  }

  // Replaces a reference to a tag that is now complete by its definition.
  void CompleteTag(v1::TypeDescriptor& d) {
    if (!d.has_named()) return;
    auto it = tags_.find(d.named());
    if (it == tags_.end()) return;
    const bool is_const = d.is_const();
    d = it->second;
    if (is_const) d.set_is_const(true);
  }

  // The base type the specifiers spell.
  absl::StatusOr<ParsedType> BaseType(const Specifiers& specifiers) {
    const int* n = specifiers.counts;
    ParsedType type;
    v1::ScalarKind kind = v1::SCALAR_KIND_INT;
    if (n[kNamed]) {
      type = specifiers.named;
    } else if (n[kVoid]) {
      kind = v1::SCALAR_KIND_VOID;
    } else if (n[kBool]) {
      kind = v1::SCALAR_KIND_BOOL;
    } else if (n[kChar]) {
      kind = n[kSigned]     ? v1::SCALAR_KIND_SIGNED_CHAR
             : n[kUnsigned] ? v1::SCALAR_KIND_UNSIGNED_CHAR
                            : v1::SCALAR_KIND_CHAR;
    } else if (n[kFloat]) {
      kind = n[kComplex] ? v1::SCALAR_KIND_COMPLEX_FLOAT : v1::SCALAR_KIND_FLOAT;
    } else if (n[kDouble]) {
      kind = n[kLong] && n[kComplex] ? v1::SCALAR_KIND_COMPLEX_LONG_DOUBLE
             : n[kLong]      ? v1::SCALAR_KIND_LONG_DOUBLE
             : n[kComplex] ? v1::SCALAR_KIND_COMPLEX_DOUBLE
                           : v1::SCALAR_KIND_DOUBLE;
    } else if (n[kShort]) {
      kind = n[kUnsigned] ? v1::SCALAR_KIND_UNSIGNED_SHORT
                          : v1::SCALAR_KIND_SHORT;
    } else if (n[kLong] == 2) {
      kind = n[kUnsigned] ? v1::SCALAR_KIND_UNSIGNED_LONG_LONG
                          : v1::SCALAR_KIND_LONG_LONG;
    } else if (n[kLong] == 1) {
      kind = n[kUnsigned] ? v1::SCALAR_KIND_UNSIGNED_LONG
                          : v1::SCALAR_KIND_LONG;
    } else {
      kind = n[kUnsigned] ? v1::SCALAR_KIND_UNSIGNED_INT : v1::SCALAR_KIND_INT;
    }
    if (!n[kNamed]) type.descriptor.set_scalar(kind);
    if (specifiers.is_const && !type.is_function) {
      type.descriptor.set_is_const(true);
    }
    return type;
  }

  // --- struct, union, enum -------------------------------------------------

  absl::StatusOr<v1::TypeDescriptor> ParseRecordSpecifier(bool is_union) {
    Nesting nesting(*this);
    if (nesting.too_deep()) return TooDeep();
    const Token keyword = Next();
    Attributes attributes;
    while (Peek().kind == TokenKind::kIdentifier &&
           IsAttributeKeyword(Peek().text)) {
      RETURN_IF_ERROR(ParseAttribute(attributes));
    }
    std::string tag;
    Token tag_token = Peek();
    if (Peek().kind == TokenKind::kIdentifier) tag = Next().text;
    const std::string full_name =
        absl::StrCat(is_union ? "union " : "struct ", tag);
    if (!Is(Peek(), "{")) {
      if (tag.empty()) {
        return Expected(absl::StrCat("a tag or '{' after '", keyword.text, "'"));
      }
      auto it = tags_.find(full_name);
      if (it != tags_.end()) return it->second;
      v1::TypeDescriptor reference;
      reference.set_named(full_name);
      return reference;
    }
    if (single_prototype_) {
      return UnsupportedAt(keyword,
                           absl::StrCat(keyword.text,
                                        " definitions cannot appear in a "
                                        "prototype: declare the type first "
                                        "(ParseDeclarations)"));
    }
    if (!tag.empty() && tags_.count(full_name) > 0 &&
        defined_here_.count(full_name) > 0) {
      return ErrorAt(tag_token, absl::StrCat("redefinition of '", full_name,
                                             "'"));
    }
    Next();  // {
    v1::TypeDescriptor descriptor;
    v1::RecordType& record = *descriptor.mutable_record();
    record.set_name(tag);
    record.set_kind(is_union ? v1::RECORD_KIND_UNION : v1::RECORD_KIND_STRUCT);
    while (!Is(Peek(), "}")) {
      if (Peek().kind == TokenKind::kEnd) {
        return Expected(absl::StrCat("'}' to end ", full_name));
      }
      RETURN_IF_ERROR(ParseMember(record));
    }
    Next();  // }
    while (Peek().kind == TokenKind::kIdentifier &&
           IsAttributeKeyword(Peek().text)) {
      RETURN_IF_ERROR(ParseAttribute(attributes));
    }
    record.set_packed(attributes.packed);
    record.set_alignment(attributes.aligned);
    absl::StatusOr<std::shared_ptr<const CType>> laid_out =
        CType::Create(descriptor);
    if (!laid_out.ok()) {
      absl::Status status = laid_out.status();
      return MakeError(status.code(), GetErrorReason(status),
                       absl::StrCat("line ", keyword.line, ", column ",
                                    keyword.column, ": ", full_name, ": ",
                                    status.message()));
    }
    descriptor = (*laid_out)->descriptor();
    StripPointees(descriptor);
    if (TypeDepth(descriptor) > kMaxTypeDepth) {
      return UnsupportedAt(keyword, absl::StrCat(full_name, " nests more than ",
                                                 kMaxTypeDepth,
                                                 " levels deep"));
    }
    if (!tag.empty()) {
      tags_[full_name] = descriptor;
      defined_here_.insert(full_name);
      v1::TypeDeclaration declaration;
      declaration.set_name(full_name);
      *declaration.mutable_type() = descriptor;
      out_->types.push_back(std::move(declaration));
    }
    return descriptor;
  }

  static void SetMemberAttributes(const Attributes& attributes,
                                  v1::Field& field) {
    field.set_alignment(attributes.aligned);
    field.set_packed(attributes.packed);
  }

  absl::Status ParseMember(v1::RecordType& record) {
    const Token first = Peek();
    ASSIGN_OR_RETURN(Specifiers specifiers, ParseSpecifiers(/*top_level=*/false));
    if (Accept(";")) {
      // C11 anonymous struct or union member.
      ASSIGN_OR_RETURN(ParsedType base, BaseType(specifiers));
      if (!base.descriptor.has_record() || !base.descriptor.record().name().empty()) {
        return ErrorAt(first, "the member declaration declares nothing: "
                              "expected a member name");
      }
      v1::Field* field = record.add_fields();
      *field->mutable_type() = base.descriptor;
      SetMemberAttributes(specifiers.attributes, *field);
      return absl::OkStatus();
    }
    while (true) {
      if (Is(Peek(), ":")) {
        // An unnamed bitfield: padding (`int : 3;`), or with width 0 the
        // start of the next storage unit (`int : 0;`).
        const Token colon = Next();
        ASSIGN_OR_RETURN(ParsedType base, BaseType(specifiers));
        ASSIGN_OR_RETURN(int64_t width, ParseConstant());
        if (width < 0 || width > 64) {
          return ErrorAt(colon, absl::StrCat("unnamed bitfield has width ",
                                             width));
        }
        v1::Field* field = record.add_fields();
        if (width == 0) {
          field->set_zero_width_bitfield(true);
        } else {
          field->set_bit_width(static_cast<uint32_t>(width));
        }
        *field->mutable_type() = std::move(base.descriptor);
        Attributes attributes = specifiers.attributes;
        RETURN_IF_ERROR(ParseDeclarationSuffixes(attributes));
        SetMemberAttributes(attributes, *field);
        if (Accept(",")) continue;
        return Expect(";", "';' after an unnamed bitfield");
      }
      ASSIGN_OR_RETURN(Declarator declarator,
                       ParseDeclarator(/*abstract=*/false));
      // `int x __attribute__((aligned(8)))`, also after a bitfield's width.
      Attributes attributes = specifiers.attributes;
      RETURN_IF_ERROR(ParseDeclarationSuffixes(attributes));
      ASSIGN_OR_RETURN(ParsedType type, Apply(specifiers, declarator));
      const std::string what = absl::StrCat("member '", declarator.name, "'");
      if (type.is_function) {
        return ErrorAt(declarator.name_token,
                       absl::StrCat(what, " is a function; a struct can hold "
                                          "a function pointer instead"));
      }
      if (type.unsized_array) {
        // A flexible array member: an array of length 0; the record's
        // layout checks that it comes last.
        if (Is(Peek(), ":")) {
          return ErrorAt(declarator.name_token,
                         absl::StrCat(what, ": an array cannot be a "
                                            "bitfield"));
        }
        v1::TypeDescriptor array;
        *array.mutable_array()->mutable_element() =
            std::move(type.descriptor);
        type.descriptor = std::move(array);
        type.unsized_array = false;
      }
      if (IsIncomplete(type.descriptor)) {
        return ErrorAt(declarator.name_token,
                       absl::StrCat(what, " has incomplete type '",
                                    type.descriptor.named(), "'"));
      }
      if (type.descriptor.has_scalar() &&
          type.descriptor.scalar() == v1::SCALAR_KIND_VOID) {
        return ErrorAt(declarator.name_token,
                       absl::StrCat(what, " has type void"));
      }
      v1::Field* field = record.add_fields();
      field->set_name(declarator.name);
      if (Accept(":")) {
        ASSIGN_OR_RETURN(int64_t width, ParseConstant());
        if (width <= 0 || width > 64) {
          return ErrorAt(declarator.name_token,
                         absl::StrCat("bitfield ", what, " has width ", width,
                                      width == 0 ? " (only an unnamed "
                                                   "bitfield may have width "
                                                   "0)"
                                                 : ""));
        }
        field->set_bit_width(static_cast<uint32_t>(width));
      }
      *field->mutable_type() = std::move(type.descriptor);
      RETURN_IF_ERROR(ParseDeclarationSuffixes(attributes));
      SetMemberAttributes(attributes, *field);
      if (Accept(",")) continue;
      return Expect(";", absl::StrCat("';' after ", what));
    }
  }

  absl::StatusOr<v1::TypeDescriptor> ParseEnumSpecifier() {
    const Token keyword = Next();
    std::string tag;
    Token tag_token = Peek();
    if (Peek().kind == TokenKind::kIdentifier) tag = Next().text;
    const std::string full_name = absl::StrCat("enum ", tag);
    if (!Is(Peek(), "{")) {
      if (tag.empty()) return Expected("a tag or '{' after 'enum'");
      auto it = tags_.find(full_name);
      if (it != tags_.end()) return it->second;
      v1::TypeDescriptor reference;
      reference.set_named(full_name);
      return reference;
    }
    if (single_prototype_) {
      return UnsupportedAt(keyword,
                           "enum definitions cannot appear in a prototype: "
                           "declare the type first (ParseDeclarations)");
    }
    if (!tag.empty() && defined_here_.count(full_name) > 0) {
      return ErrorAt(tag_token, absl::StrCat("redefinition of '", full_name,
                                             "'"));
    }
    Next();  // {
    v1::TypeDescriptor descriptor;
    v1::EnumType& enum_type = *descriptor.mutable_enum_type();
    enum_type.set_name(tag);
    int64_t next = 0;
    int64_t min = 0, max = 0;
    while (!Is(Peek(), "}")) {
      if (Peek().kind != TokenKind::kIdentifier) {
        return Expected(enum_type.constants().empty()
                            ? "an enumerator name"
                            : "an enumerator name or '}'");
      }
      const Token name = Next();
      if (constants_.count(name.text) > 0) {
        return ErrorAt(name, absl::StrCat("redefinition of enumerator '",
                                          name.text, "'"));
      }
      if (Accept("=")) {
        ASSIGN_OR_RETURN(next, ParseConstant());
      }
      v1::EnumConstant* constant = enum_type.add_constants();
      constant->set_name(name.text);
      constant->set_value(next);
      constants_[name.text] = next;
      if (enum_type.constants_size() == 1) {
        min = max = next;
      } else {
        min = std::min(min, next);
        max = std::max(max, next);
      }
      next = static_cast<int64_t>(static_cast<uint64_t>(next) + 1);
      if (!Accept(",")) {
        if (!Is(Peek(), "}")) return Expected("',' or '}' after the enumerator");
      }
    }
    Next();  // }
    if (enum_type.constants().empty()) {
      return ErrorAt(keyword, absl::StrCat("'", full_name,
                                           "' has no enumerators"));
    }
    // GCC's choice: int if every value fits, else the narrowest wider type.
    if (min >= INT32_MIN && max <= INT32_MAX) {
      enum_type.set_underlying(v1::SCALAR_KIND_INT);
    } else if (min >= 0 && max <= int64_t{UINT32_MAX}) {
      enum_type.set_underlying(v1::SCALAR_KIND_UNSIGNED_INT);
    } else {
      enum_type.set_underlying(v1::SCALAR_KIND_LONG);
    }
    if (!tag.empty()) {
      tags_[full_name] = descriptor;
      defined_here_.insert(full_name);
      v1::TypeDeclaration declaration;
      declaration.set_name(full_name);
      *declaration.mutable_type() = descriptor;
      out_->types.push_back(std::move(declaration));
    }
    return descriptor;
  }

  // --- constant expressions (array sizes, enumerators, bitfields) ---------

  absl::StatusOr<int64_t> ParseConstant() { return ParseBinary(0); }

  static int Precedence(const Token& token) {
    if (token.kind != TokenKind::kPunctuator) return -1;
    const std::string& p = token.text;
    if (p == "|") return 1;
    if (p == "^") return 2;
    if (p == "&") return 3;
    if (p == "<<" || p == ">>") return 4;
    if (p == "+" || p == "-") return 5;
    if (p == "*" || p == "/" || p == "%") return 6;
    return -1;
  }

  // Precedence climbing: operators binding tighter than `min_precedence`.
  absl::StatusOr<int64_t> ParseBinary(int min_precedence) {
    ASSIGN_OR_RETURN(int64_t left, ParseUnary());
    while (Precedence(Peek()) > min_precedence) {
      const int precedence = Precedence(Peek());
      const Token op = Next();
      ASSIGN_OR_RETURN(int64_t right, ParseBinary(precedence));
      const uint64_t a = static_cast<uint64_t>(left);
      const uint64_t b = static_cast<uint64_t>(right);
      if (op.text == "|") {
        left = static_cast<int64_t>(a | b);
      } else if (op.text == "^") {
        left = static_cast<int64_t>(a ^ b);
      } else if (op.text == "&") {
        left = static_cast<int64_t>(a & b);
      } else if (op.text == "<<" || op.text == ">>") {
        if (right < 0 || right > 63) {
          return ErrorAt(op, absl::StrCat("shift count ", right,
                                          " is out of range"));
        }
        left = op.text == "<<" ? static_cast<int64_t>(a << right)
                               : (left >> right);
      } else if (op.text == "+") {
        left = static_cast<int64_t>(a + b);
      } else if (op.text == "-") {
        left = static_cast<int64_t>(a - b);
      } else if (op.text == "*") {
        left = static_cast<int64_t>(a * b);
      } else {
        if (right == 0) return ErrorAt(op, "division by zero");
        if (left == INT64_MIN && right == -1) {
          return ErrorAt(op, "the division overflows");
        }
        left = op.text == "/" ? left / right : left % right;
      }
    }
    return left;
  }

  absl::StatusOr<int64_t> ParseUnary() {
    Nesting nesting(*this);
    if (nesting.too_deep()) return TooDeep();
    if (Accept("-")) {
      ASSIGN_OR_RETURN(int64_t v, ParseUnary());
      return static_cast<int64_t>(0 - static_cast<uint64_t>(v));
    }
    if (Accept("+")) return ParseUnary();
    if (Accept("~")) {
      ASSIGN_OR_RETURN(int64_t v, ParseUnary());
      return ~v;
    }
    if (Accept("!")) {
      ASSIGN_OR_RETURN(int64_t v, ParseUnary());
      return v == 0 ? 1 : 0;
    }
    if (Accept("(")) {
      ASSIGN_OR_RETURN(int64_t v, ParseBinary(0));
      RETURN_IF_ERROR(Expect(")", "')'"));
      return v;
    }
    const Token& token = Peek();
    if (token.kind == TokenKind::kNumber) {
      Next();
      return ParseIntegerLiteral(token);
    }
    if (token.kind == TokenKind::kCharacter) {
      Next();
      return ParseCharacterLiteral(token);
    }
    if (token.kind == TokenKind::kIdentifier) {
      auto it = constants_.find(token.text);
      if (it != constants_.end()) {
        Next();
        return it->second;
      }
      return ErrorAt(token, absl::StrCat("'", token.text,
                                         "' is not an enumerator or an "
                                         "integer constant"));
    }
    return Expected("an integer constant");
  }

  absl::StatusOr<int64_t> ParseIntegerLiteral(const Token& token) {
    absl::string_view text = token.text;
    while (!text.empty() && (text.back() == 'u' || text.back() == 'U' ||
                             text.back() == 'l' || text.back() == 'L')) {
      text.remove_suffix(1);
    }
    int base = 10;
    if (text.size() > 2 && text[0] == '0' && (text[1] == 'x' || text[1] == 'X')) {
      base = 16;
      text.remove_prefix(2);
    } else if (text.size() > 2 && text[0] == '0' &&
               (text[1] == 'b' || text[1] == 'B')) {
      base = 2;
      text.remove_prefix(2);
    } else if (text.size() > 1 && text[0] == '0') {
      base = 8;
      text.remove_prefix(1);
    }
    if (text.empty()) {
      return ErrorAt(token, absl::StrCat("'", token.text,
                                         "' is not an integer constant"));
    }
    uint64_t value = 0;
    for (char c : text) {
      int digit;
      if (c >= '0' && c <= '9') {
        digit = c - '0';
      } else if (c >= 'a' && c <= 'f') {
        digit = c - 'a' + 10;
      } else if (c >= 'A' && c <= 'F') {
        digit = c - 'A' + 10;
      } else {
        digit = 99;
      }
      if (digit >= base) {
        return ErrorAt(token, absl::StrCat("'", token.text,
                                           "' is not an integer constant"));
      }
      if (value > (UINT64_MAX - digit) / base) {
        return ErrorAt(token, absl::StrCat("the integer constant '",
                                           token.text, "' is too large"));
      }
      value = value * base + digit;
    }
    return static_cast<int64_t>(value);
  }

  absl::StatusOr<int64_t> ParseCharacterLiteral(const Token& token) {
    absl::string_view body = token.text;
    body.remove_prefix(1);
    body.remove_suffix(1);
    if (body.size() == 1 && body[0] != '\\') {
      return static_cast<int64_t>(static_cast<signed char>(body[0]));
    }
    if (body.size() >= 2 && body[0] == '\\') {
      static const std::map<char, int>* const kEscapes = new std::map<char, int>{
          {'n', '\n'}, {'t', '\t'}, {'r', '\r'}, {'0', 0},     {'\\', '\\'},
          {'\'', '\''}, {'"', '"'}, {'a', '\a'}, {'b', '\b'}, {'f', '\f'},
          {'v', '\v'}};
      if (body.size() == 2 && kEscapes->count(body[1]) > 0) {
        return static_cast<int64_t>(kEscapes->at(body[1]));
      }
      if (body[1] == 'x' && body.size() > 2 && body.size() <= 4) {
        Token hex = token;
        hex.text = absl::StrCat("0x", body.substr(2));
        return ParseIntegerLiteral(hex);
      }
    }
    return UnsupportedAt(token, absl::StrCat("the character constant ",
                                             token.text,
                                             " is not supported"));
  }

  // --- declarators ---------------------------------------------------------

  // After '(' in a declarator: does a parameter list start here (as opposed
  // to a parenthesized declarator such as `(*cmp)`)?
  bool StartsParameterList(const Token& token) const {
    return Is(token, ")") || Is(token, "...") || StartsSpecifiers(token);
  }

  absl::StatusOr<Declarator> ParseDeclarator(bool abstract) {
    Nesting nesting(*this);
    if (nesting.too_deep()) return TooDeep();
    Declarator declarator;
    std::vector<DeclaratorOp> pointers;
    while (Is(Peek(), "*")) {
      DeclaratorOp op;
      op.kind = DeclaratorOp::kPointer;
      op.token = Next();
      while (Peek().kind == TokenKind::kIdentifier &&
             (IsQualifier(Peek().text) || IsAttributeKeyword(Peek().text))) {
        if (IsAttributeKeyword(Peek().text)) {
          Attributes ignored;
          RETURN_IF_ERROR(ParseAttribute(ignored));
          continue;
        }
        if (IsConstQualifier(Peek().text)) op.is_const = true;
        Next();
      }
      pointers.push_back(std::move(op));
    }
    std::vector<DeclaratorOp> inner;
    // After the specifiers, even a typedef name is the declarator's name
    // (`typedef long t;` may redeclare t).
    if (Peek().kind == TokenKind::kIdentifier && !IsKeyword(Peek().text)) {
      declarator.name_token = Next();
      declarator.name = declarator.name_token.text;
      declarator.has_name = true;
    } else if (Is(Peek(), "(") && !(abstract && StartsParameterList(Peek(1)))) {
      Next();
      ASSIGN_OR_RETURN(Declarator nested, ParseDeclarator(abstract));
      RETURN_IF_ERROR(Expect(")", "')' to close the declarator"));
      declarator.name = std::move(nested.name);
      declarator.name_token = std::move(nested.name_token);
      declarator.has_name = nested.has_name;
      inner = std::move(nested.ops);
    } else if (!abstract) {
      return Expected("a name");
    } else {
      declarator.name_token = Peek();
    }
    std::vector<DeclaratorOp> suffixes;
    while (true) {
      if (Is(Peek(), "[")) {
        DeclaratorOp op;
        op.kind = DeclaratorOp::kArray;
        op.token = Next();
        // `static` and qualifiers inside a parameter's brackets change
        // nothing ffid needs.
        while (Peek().kind == TokenKind::kIdentifier &&
               (IsQualifier(Peek().text) || Peek().text == "static")) {
          Next();
        }
        if (Accept("]")) {
          op.unsized = true;
        } else {
          const Token size_token = Peek();
          ASSIGN_OR_RETURN(int64_t length, ParseConstant());
          if (length <= 0) {
            return ErrorAt(size_token, absl::StrCat("the array size ", length,
                                                    " is not positive"));
          }
          op.length = static_cast<uint64_t>(length);
          RETURN_IF_ERROR(Expect("]", "']' after the array size"));
        }
        suffixes.push_back(std::move(op));
      } else if (Is(Peek(), "(")) {
        DeclaratorOp op;
        op.kind = DeclaratorOp::kFunction;
        op.token = Next();
        ASSIGN_OR_RETURN(op.function, ParseParameters());
        suffixes.push_back(std::move(op));
      } else {
        break;
      }
    }
    declarator.ops = std::move(pointers);
    for (auto it = suffixes.rbegin(); it != suffixes.rend(); ++it) {
      declarator.ops.push_back(std::move(*it));
    }
    for (DeclaratorOp& op : inner) declarator.ops.push_back(std::move(op));
    if (declarator.ops.size() > static_cast<size_t>(kMaxNesting)) {
      return ErrorAt(declarator.ops[kMaxNesting].token,
                     absl::StrCat("the declarator derives more than ",
                                  kMaxNesting, " types (pointers, arrays, "
                                  "functions)"));
    }
    return declarator;
  }

  absl::StatusOr<v1::FunctionType> ParseParameters() {
    v1::FunctionType function;
    if (Accept(")")) return function;
    int index = 0;
    while (true) {
      ++index;
      if (Is(Peek(), "...")) {
        Next();
        function.set_variadic(true);
        RETURN_IF_ERROR(Expect(")", "')' after '...'"));
        return function;
      }
      const Token start = Peek();
      ASSIGN_OR_RETURN(Specifiers specifiers,
                       ParseSpecifiers(/*top_level=*/false));
      ASSIGN_OR_RETURN(Declarator declarator,
                       ParseDeclarator(/*abstract=*/true));
      ASSIGN_OR_RETURN(ParsedType type, Apply(specifiers, declarator));
      const bool is_void = !type.is_function &&
                           type.descriptor.has_scalar() &&
                           type.descriptor.scalar() == v1::SCALAR_KIND_VOID;
      if (is_void) {
        if (index == 1 && !declarator.has_name && Is(Peek(), ")")) {
          Next();
          return function;  // (void): no parameters
        }
        return ErrorAt(start,
                       absl::StrCat("parameter ", index,
                                    " has type void; only '(void)' alone "
                                    "means no parameters"));
      }
      // Parameters of array and function type are pointers, as in C.
      if (type.is_function) {
        v1::TypeDescriptor pointer;
        *pointer.mutable_function_pointer() = std::move(type.function);
        type.descriptor = std::move(pointer);
        type.is_function = false;
      } else if (type.descriptor.has_array() || type.unsized_array) {
        v1::TypeDescriptor element = type.unsized_array
                                         ? type.descriptor
                                         : type.descriptor.array().element();
        type.descriptor = PointerTo(element);
        type.unsized_array = false;
      }
      v1::Parameter* parameter = function.add_parameters();
      parameter->set_name(declarator.name);
      *parameter->mutable_type() = std::move(type.descriptor);
      if (Accept(",")) {
        if (Is(Peek(), ")")) {
          return Expected(absl::StrCat("parameter ", index + 1, " after ','"));
        }
        continue;
      }
      RETURN_IF_ERROR(Expect(
          ")", absl::StrCat("')' or ',' after parameter ", index)));
      return function;
    }
  }

  // `T *`: C strings for the character types, else a pointer.
  v1::TypeDescriptor PointerTo(const v1::TypeDescriptor& pointee) {
    v1::TypeDescriptor pointer;
    if (pointee.has_scalar()) {
      v1::StringEncoding encoding = v1::STRING_ENCODING_UNSPECIFIED;
      switch (pointee.scalar()) {
        case v1::SCALAR_KIND_CHAR:
          encoding = v1::STRING_ENCODING_UTF8;
          break;
        case v1::SCALAR_KIND_WCHAR_T:
          encoding = v1::STRING_ENCODING_WCHAR;
          break;
        case v1::SCALAR_KIND_CHAR16_T:
          encoding = v1::STRING_ENCODING_UTF16;
          break;
        case v1::SCALAR_KIND_CHAR32_T:
          encoding = v1::STRING_ENCODING_UTF32;
          break;
        case v1::SCALAR_KIND_VOID:
          pointer.mutable_pointer();
          return pointer;
        default:
          break;
      }
      if (encoding != v1::STRING_ENCODING_UNSPECIFIED) {
        v1::StringType* string = pointer.mutable_string();
        string->set_encoding(encoding);
        string->set_is_const(pointee.is_const());
        return pointer;
      }
    }
    *pointer.mutable_pointer()->mutable_pointee() = pointee;
    return pointer;
  }

  absl::StatusOr<ParsedType> Apply(const Specifiers& specifiers,
                                   const Declarator& declarator) {
    ASSIGN_OR_RETURN(ParsedType type, BaseType(specifiers));
    for (const DeclaratorOp& op : declarator.ops) {
      if (type.unsized_array) {
        return ErrorAt(op.token, "an array without a size can only be a "
                                 "parameter or the last member");
      }
      switch (op.kind) {
        case DeclaratorOp::kPointer:
          if (type.is_function) {
            v1::TypeDescriptor pointer;
            *pointer.mutable_function_pointer() = std::move(type.function);
            type.descriptor = std::move(pointer);
            type.is_function = false;
          } else {
            type.descriptor = PointerTo(type.descriptor);
          }
          if (op.is_const) type.descriptor.set_is_const(true);
          break;
        case DeclaratorOp::kArray: {
          if (type.is_function) {
            return ErrorAt(op.token, "an array of functions is not C; use an "
                                     "array of function pointers");
          }
          if (type.descriptor.has_scalar() &&
              type.descriptor.scalar() == v1::SCALAR_KIND_VOID) {
            return ErrorAt(op.token, "an array of void is not C");
          }
          if (IsIncomplete(type.descriptor)) {
            return ErrorAt(op.token,
                           absl::StrCat("an array of incomplete type '",
                                        type.descriptor.named(), "'"));
          }
          if (op.unsized) {
            type.unsized_array = true;
            break;
          }
          v1::TypeDescriptor array;
          *array.mutable_array()->mutable_element() = std::move(type.descriptor);
          array.mutable_array()->set_length(op.length);
          type.descriptor = std::move(array);
          break;
        }
        case DeclaratorOp::kFunction: {
          if (type.is_function) {
            return ErrorAt(op.token, "a function cannot return a function; "
                                     "return a function pointer");
          }
          if (type.descriptor.has_array()) {
            return ErrorAt(op.token, "a function cannot return an array");
          }
          type.function = op.function;
          *type.function.mutable_return_type() = std::move(type.descriptor);
          type.descriptor.Clear();
          type.is_function = true;
          break;
        }
      }
    }
    const int depth = type.is_function ? FunctionDepth(type.function)
                                       : TypeDepth(type.descriptor);
    if (depth > kMaxTypeDepth) {
      return UnsupportedAt(
          declarator.has_name ? declarator.name_token : specifiers.first,
          absl::StrCat("the type nests ", depth, " levels deep; at most ",
                       kMaxTypeDepth, " are supported"));
    }
    return type;
  }

  std::vector<Token> tokens_;
  size_t index_ = 0;
  int depth_ = 0;
  const bool single_prototype_;
  Declarations* out_ = nullptr;
  std::map<std::string, ParsedType> typedefs_;
  // "struct point" -> its laid-out definition.
  std::map<std::string, v1::TypeDescriptor> tags_;
  std::set<std::string> defined_here_;
  std::map<std::string, int64_t> constants_;
};

}  // namespace

absl::StatusOr<Declarations> ParseDeclarations(
    absl::string_view source, const std::vector<v1::TypeDeclaration>& known) {
  ASSIGN_OR_RETURN(std::vector<Token> tokens, Tokenizer(source).Run());
  Parser parser(std::move(tokens), /*single_prototype=*/false);
  RETURN_IF_ERROR(parser.AddKnown(known));
  Declarations declarations;
  RETURN_IF_ERROR(parser.ParseAll(declarations));
  return declarations;
}

absl::StatusOr<Declarations> ParseDeclarations(absl::string_view source) {
  return ParseDeclarations(source, {});
}

absl::StatusOr<v1::FunctionDeclaration> ParseFunctionDeclaration(
    absl::string_view source, const std::vector<v1::TypeDeclaration>& known) {
  ASSIGN_OR_RETURN(std::vector<Token> tokens, Tokenizer(source).Run());
  Parser parser(std::move(tokens), /*single_prototype=*/true);
  RETURN_IF_ERROR(parser.AddKnown(known));
  return parser.ParsePrototype();
}

absl::StatusOr<v1::FunctionDeclaration> ParseFunctionDeclaration(
    absl::string_view source) {
  return ParseFunctionDeclaration(source, {});
}

absl::StatusOr<v1::TypeDescriptor> ParseTypeName(
    absl::string_view source, const std::vector<v1::TypeDeclaration>& known) {
  ASSIGN_OR_RETURN(std::vector<Token> tokens, Tokenizer(source).Run());
  Parser parser(std::move(tokens), /*single_prototype=*/true);
  RETURN_IF_ERROR(parser.AddKnown(known));
  return parser.ParseTypeName();
}

namespace {

absl::Status ResolveIn(v1::TypeDescriptor& d,
                       const std::vector<v1::TypeDeclaration>& known,
                       int depth);

absl::Status ResolveFunctionIn(v1::FunctionType& function,
                               const std::vector<v1::TypeDeclaration>& known,
                               int depth) {
  if (function.has_return_type()) {
    RETURN_IF_ERROR(ResolveIn(*function.mutable_return_type(), known, depth));
  }
  for (v1::Parameter& parameter : *function.mutable_parameters()) {
    RETURN_IF_ERROR(ResolveIn(*parameter.mutable_type(), known, depth));
  }
  return absl::OkStatus();
}

absl::Status ResolveIn(v1::TypeDescriptor& d,
                       const std::vector<v1::TypeDeclaration>& known,
                       int depth) {
  if (depth > kMaxTypeDepth) {
    return InvalidArgumentError(
        v1::ERROR_REASON_TYPE_MISMATCH,
        absl::StrCat("the type nests more than ", kMaxTypeDepth,
                     " levels deep (does a type contain itself?)"));
  }
  switch (d.kind_case()) {
    case v1::TypeDescriptor::kNamed: {
      const std::string name = d.named();
      const bool is_const = d.is_const();
      const v1::TypeDeclaration* found = nullptr;
      // The newest declaration of a name wins.
      for (auto it = known.rbegin(); it != known.rend(); ++it) {
        if (it->name() == name) {
          found = &*it;
          break;
        }
      }
      if (found != nullptr) {
        d = found->type();
      } else {
        // Builtin spellings ("double", "int[4]") need none of the session's
        // types, whose copying would dominate.
        absl::StatusOr<v1::TypeDescriptor> parsed = ParseTypeName(name, {});
        if (!parsed.ok() || parsed->has_named()) {
          parsed = ParseTypeName(name, known);
        }
        if (!parsed.ok()) {
          return InvalidArgumentError(
              v1::ERROR_REASON_TYPE_MISMATCH,
              absl::StrCat("unknown type '", name,
                           "': declare it first with ParseDeclarations in "
                           "this session (",
                           parsed.status().message(), ")"));
        }
        if (parsed->has_named() && parsed->named() == name) {
          return InvalidArgumentError(
              v1::ERROR_REASON_TYPE_MISMATCH,
              absl::StrCat("unknown type '", name,
                           "': declare it first with ParseDeclarations in "
                           "this session"));
        }
        d = *std::move(parsed);
      }
      if (is_const) d.set_is_const(true);
      return ResolveIn(d, known, depth + 1);
    }
    case v1::TypeDescriptor::kPointer:
      // A plain pointer never touches its pointee, which may stay opaque.
      if (d.pointer().direction() != v1::POINTER_DIRECTION_UNSPECIFIED &&
          d.pointer().has_pointee()) {
        return ResolveIn(*d.mutable_pointer()->mutable_pointee(), known,
                         depth + 1);
      }
      return absl::OkStatus();
    case v1::TypeDescriptor::kArray:
      return ResolveIn(*d.mutable_array()->mutable_element(), known,
                       depth + 1);
    case v1::TypeDescriptor::kRecord:
      for (v1::Field& field : *d.mutable_record()->mutable_fields()) {
        RETURN_IF_ERROR(ResolveIn(*field.mutable_type(), known, depth + 1));
      }
      return absl::OkStatus();
    default:
      return absl::OkStatus();
  }
}

}  // namespace

absl::Status ResolveNamedTypes(v1::TypeDescriptor& descriptor,
                               const std::vector<v1::TypeDeclaration>& known) {
  return ResolveIn(descriptor, known, 0);
}

absl::Status ResolveNamedTypes(v1::FunctionType& function,
                               const std::vector<v1::TypeDeclaration>& known) {
  return ResolveFunctionIn(function, known, 0);
}

}  // namespace ffid::ffi
