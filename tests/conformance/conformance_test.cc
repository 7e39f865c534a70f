// The C++ runner of the conformance list (tests/conformance/scenarios.json,
// format in tests/conformance/README.md): one GoogleTest per scenario, each
// in a new session of a real daemon, through the C++ client.
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "clients/cpp/ffid/client.h"
#include "clients/cpp/ffid/values.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "tests/testing/daemon.h"
#include "tests/testing/ffid_test.h"

namespace ffid {
namespace {

using Json = google::protobuf::Value;
using JsonObject = google::protobuf::Struct;

// The file's root object; read once.
const JsonObject& Root() {
  static const JsonObject* root = [] {
    auto* parsed = new JsonObject();
    std::ifstream in(FFID_CONFORMANCE_SCENARIOS);
    std::stringstream text;
    text << in.rdbuf();
    auto status = google::protobuf::util::JsonStringToMessage(text.str(), parsed);
    if (!status.ok()) {
      ADD_FAILURE() << FFID_CONFORMANCE_SCENARIOS << ": " << status.ToString();
    }
    return parsed;
  }();
  return *root;
}

std::vector<std::string> ScenarioNames() {
  std::vector<std::string> names;
  auto it = Root().fields().find("scenarios");
  if (it == Root().fields().end()) return names;
  for (const Json& scenario : it->second.list_value().values()) {
    names.push_back(scenario.struct_value().fields().at("name").string_value());
  }
  return names;
}

const JsonObject& ScenarioNamed(const std::string& name) {
  for (const Json& scenario :
       Root().fields().at("scenarios").list_value().values()) {
    if (scenario.struct_value().fields().at("name").string_value() == name) {
      return scenario.struct_value();
    }
  }
  static const JsonObject empty;
  return empty;
}

// The field `key` of `object`, or nullptr.
const Json* Field(const JsonObject& object, const std::string& key) {
  auto it = object.fields().find(key);
  return it == object.fields().end() ? nullptr : &it->second;
}

std::string StringField(const JsonObject& object, const std::string& key) {
  const Json* value = Field(object, key);
  return value == nullptr ? "" : value->string_value();
}

uint64_t UintField(const JsonObject& object, const std::string& key) {
  const Json* value = Field(object, key);
  return value == nullptr ? 0 : static_cast<uint64_t>(value->number_value());
}

// `{"$tag": ...}`: the tag's value, if `value` is such an object.
const Json* Tagged(const Json& value, const std::string& tag) {
  if (!value.has_struct_value()) return nullptr;
  const auto& fields = value.struct_value().fields();
  if (fields.size() != 1) return nullptr;
  auto it = fields.find(tag);
  return it == fields.end() ? nullptr : &it->second;
}

std::string Show(const Json& value) {
  std::string text;
  (void)google::protobuf::util::MessageToJsonString(value, &text);
  return text;
}

// What a scenario binds by name: memory (as pointers) and the callback.
using Bindings = std::map<std::string, v1::Value>;

// Converts a JSON value of the file to the ffid.v1.Value for a parameter of
// `type` (null when unknown: then the JSON alone decides).
v1::Value ToValue(const Json& json, const v1::TypeDescriptor* type,
                  const Bindings& bindings) {
  v1::Value value;
  if (const Json* ref = Tagged(json, "$ref")) {
    auto it = bindings.find(ref->string_value());
    if (it != bindings.end()) return it->second;
    ADD_FAILURE() << "unknown $ref " << ref->string_value();
    return value;
  }
  if (const Json* digits = Tagged(json, "$int")) {
    int64_t signed_value;
    uint64_t unsigned_value;
    if (absl::SimpleAtoi(digits->string_value(), &signed_value)) {
      value.set_int_value(signed_value);
    } else if (absl::SimpleAtoi(digits->string_value(), &unsigned_value)) {
      value.set_uint_value(unsigned_value);
    } else {
      ADD_FAILURE() << "bad $int " << digits->string_value();
    }
    return value;
  }
  if (const Json* special = Tagged(json, "$double")) {
    const std::string& name = special->string_value();
    if (name == "nan") value.set_double_value(std::nan(""));
    if (name == "inf") value.set_double_value(INFINITY);
    if (name == "-inf") value.set_double_value(-INFINITY);
    if (name == "-0") value.set_double_value(-0.0);
    return value;
  }
  switch (json.kind_case()) {
    case Json::kNullValue:
      value.set_null_value(v1::NULL_VALUE_UNSPECIFIED);
      break;
    case Json::kBoolValue:
      value.set_bool_value(json.bool_value());
      break;
    case Json::kNumberValue: {
      const double number = json.number_value();
      const bool floating = type != nullptr && type->has_scalar() &&
                            (type->scalar() == v1::SCALAR_KIND_FLOAT ||
                             type->scalar() == v1::SCALAR_KIND_DOUBLE);
      if (!floating && number == std::floor(number) && std::fabs(number) < 9.2e18) {
        value.set_int_value(static_cast<int64_t>(number));
      } else {
        value.set_double_value(number);
      }
      break;
    }
    case Json::kStringValue:
      if (type != nullptr && type->has_enum_type()) {
        value.set_enum_value(json.string_value());
      } else {
        value.set_string_value(json.string_value());
      }
      break;
    case Json::kStructValue: {
      auto* fields = value.mutable_record_value()->mutable_fields();
      for (const auto& [name, member] : json.struct_value().fields()) {
        const v1::TypeDescriptor* member_type = nullptr;
        if (type != nullptr && type->has_record()) {
          for (const v1::Field& field : type->record().fields()) {
            if (field.name() == name) member_type = &field.type();
          }
        }
        (*fields)[name] = ToValue(member, member_type, bindings);
      }
      break;
    }
    case Json::kListValue: {
      const v1::TypeDescriptor* element =
          type != nullptr && type->has_array() ? &type->array().element()
                                               : nullptr;
      for (const Json& item : json.list_value().values()) {
        *value.mutable_array_value()->add_elements() =
            ToValue(item, element, bindings);
      }
      break;
    }
    default:
      break;
  }
  return value;
}

// Whether `actual` is what the JSON `expected` describes; `why` says how
// not.
bool Matches(const Json& expected, const v1::Value& actual, std::string* why) {
  auto fail = [&](absl::string_view what) {
    *why = absl::StrCat("expected ", Show(expected), ", got ",
                        actual.ShortDebugString(), what.empty() ? "" : ": ", what);
    return false;
  };
  std::optional<testing::Integer> integer = testing::IntegerOf(actual);
  if (const Json* digits = Tagged(expected, "$int")) {
    if (!integer.has_value()) return fail("not an integer");
    if (testing::IntegerToString(*integer) != digits->string_value()) return fail("");
    return true;
  }
  if (const Json* special = Tagged(expected, "$double")) {
    if (!actual.has_double_value()) return fail("not a floating value");
    const double d = actual.double_value();
    const std::string& name = special->string_value();
    if (name == "nan") return std::isnan(d) ? true : fail("");
    if (name == "inf") return d == INFINITY ? true : fail("");
    if (name == "-inf") return d == -INFINITY ? true : fail("");
    if (name == "-0") return d == 0 && std::signbit(d) ? true : fail("");
    return fail("unknown $double");
  }
  switch (expected.kind_case()) {
    case Json::kNullValue:
      if (actual.kind_case() == v1::Value::KIND_NOT_SET || actual.has_null_value()) {
        return true;
      }
      return fail("");
    case Json::kBoolValue:
      return actual.has_bool_value() && actual.bool_value() == expected.bool_value()
                 ? true
                 : fail("");
    case Json::kNumberValue: {
      const double number = expected.number_value();
      if (actual.has_double_value()) {
        return actual.double_value() == number ? true : fail("");
      }
      if (integer.has_value()) {
        return static_cast<double>(*integer) == number ? true : fail("");
      }
      return fail("not a number");
    }
    case Json::kStringValue:
      if (actual.has_string_value()) {
        return actual.string_value() == expected.string_value() ? true : fail("");
      }
      if (actual.has_enum_value()) {
        return actual.enum_value() == expected.string_value() ? true : fail("");
      }
      return fail("not a string");
    case Json::kStructValue: {
      if (!actual.has_record_value()) return fail("not a record");
      const auto& fields = actual.record_value().fields();
      if (fields.size() != expected.struct_value().fields().size()) {
        return fail("different members");
      }
      for (const auto& [name, member] : expected.struct_value().fields()) {
        auto it = fields.find(name);
        if (it == fields.end()) return fail(absl::StrCat("no member ", name));
        if (!Matches(member, it->second, why)) return false;
      }
      return true;
    }
    case Json::kListValue: {
      if (!actual.has_array_value()) return fail("not an array");
      const auto& elements = actual.array_value().elements();
      if (elements.size() != expected.list_value().values_size()) {
        return fail("different lengths");
      }
      for (int i = 0; i < elements.size(); ++i) {
        if (!Matches(expected.list_value().values(i), elements[i], why)) return false;
      }
      return true;
    }
    default:
      return fail("unexpected expectation");
  }
}

class ConformanceTest : public ::testing::TestWithParam<std::string> {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::unique_ptr<testing::Daemon>> daemon = testing::Daemon::Start();
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    daemon_ = std::move(*daemon).release();
    not_allowed_dir_ = daemon_->temp_dir() + "/not-allowed";
    ASSERT_EQ(mkdir(not_allowed_dir_.c_str(), 0700), 0);
    // The file's set-up entries.
    for (const Json& entry : Root().fields().at("setup").list_value().values()) {
      const JsonObject& step = entry.struct_value();
      if (const Json* path = Field(step, "write")) {
        std::ofstream(Substitute(path->string_value())) << StringField(step, "text");
      } else if (const Json* from = Field(step, "copy")) {
        std::ifstream in(Substitute(from->string_value()), std::ios::binary);
        std::ofstream out(Substitute(StringField(step, "to")), std::ios::binary);
        out << in.rdbuf();
        ASSERT_TRUE(out.good()) << "cannot copy " << from->string_value();
      } else {
        FAIL() << "unknown set-up entry " << entry.ShortDebugString();
      }
    }
  }

  static void TearDownTestSuite() {
    if (daemon_ == nullptr) return;
    EXPECT_TRUE(daemon_->Stop().ok());
    delete daemon_;
    daemon_ = nullptr;
  }

  static std::string Substitute(const std::string& text) {
    return absl::StrReplaceAll(
        text, {{"{fixture}", testing::FixturePath()},
               {"{callbacks_fixture}", testing::CallbacksFixturePath()},
               {"{fixture_dir}", testing::FixtureDir()},
               {"{allowed_dir}", daemon_->allowed_dir()},
               {"{not_allowed_dir}", not_allowed_dir_}});
  }

  // The reason of a failure: the server's, or DEADLINE_EXCEEDED for a
  // deadline that the client's gRPC enforced (which carries no details).
  static std::string Reason(const absl::Status& status) {
    std::string reason = client::ErrorReason(status);
    if (reason.empty() && status.code() == absl::StatusCode::kDeadlineExceeded) {
      reason = "DEADLINE_EXCEEDED";
    }
    return reason;
  }

  // Compares a failure (or success) with `expect`.
  static void ExpectOutcome(const absl::Status& status, const JsonObject& expect,
                            const std::string& what) {
    const std::string reason = StringField(expect, "error");
    if (reason.empty()) {
      EXPECT_TRUE(status.ok()) << what << ": " << status << " (reason "
                               << Reason(status) << ")";
    } else {
      EXPECT_EQ(Reason(status), reason) << what << ": " << status;
    }
  }

  // Runs the steps before a call: load, cdef, resolve. Returns the failure
  // of the first that fails.
  absl::StatusOr<client::Function> Prepare(client::Session& session,
                                           const JsonObject& spec,
                                           const std::string& function) {
    absl::StatusOr<client::Library> library =
        session.LoadLibrary(Substitute(StringField(spec, "library")));
    if (!library.ok()) return library.status();
    library_ = *library;
    const std::string cdef = StringField(spec, "cdef");
    if (!cdef.empty()) {
      absl::StatusOr<v1::ParseDeclarationsResponse> parsed =
          session.ParseDeclarations(cdef);
      if (!parsed.ok()) return parsed.status();
      for (const v1::TypeDeclaration& declaration : parsed->types()) {
        types_[declaration.name()] = declaration.type();
      }
    }
    return Resolve(session, spec, function);
  }

  absl::StatusOr<client::Function> Resolve(client::Session& session,
                                           const JsonObject& spec,
                                           const std::string& declaration) {
    absl::StatusOr<v1::ParseDeclarationsResponse> parsed =
        session.ParseDeclarations(declaration + ";");
    if (!parsed.ok()) return parsed.status();
    if (parsed->functions_size() != 1) {
      return absl::InvalidArgumentError("not one prototype: " + declaration);
    }
    v1::FunctionType type = parsed->functions(0).type();
    std::set<std::string> out;
    if (const Json* names = Field(spec, "out")) {
      for (const Json& name : names->list_value().values()) out.insert(name.string_value());
    }
    for (v1::Parameter& parameter : *type.mutable_parameters()) {
      if (out.count(parameter.name()) != 0) {
        parameter.mutable_type()->mutable_pointer()->set_direction(
            v1::POINTER_DIRECTION_OUT);
      }
    }
    return session.ResolveFunction(library_, parsed->functions(0).name(), type);
  }

  // The type a value for `type` is converted for: named types resolved
  // through the scenario's cdef.
  const v1::TypeDescriptor* Expand(const v1::TypeDescriptor& type) const {
    if (type.has_named()) {
      auto it = types_.find(type.named());
      return it == types_.end() ? nullptr : &it->second;
    }
    return &type;
  }

  std::vector<v1::Value> Arguments(const client::Function& function,
                                   const Json* arguments,
                                   const Bindings& bindings) const {
    std::vector<v1::Value> values;
    int next = 0;
    const int given = arguments == nullptr ? 0 : arguments->list_value().values_size();
    for (const v1::Parameter& parameter : function.type.parameters()) {
      if (parameter.type().has_pointer() &&
          parameter.type().pointer().direction() == v1::POINTER_DIRECTION_OUT) {
        values.emplace_back();
        continue;
      }
      if (next >= given) return values;
      values.push_back(ToValue(arguments->list_value().values(next++),
                               Expand(parameter.type()), bindings));
    }
    for (; next < given; ++next) {
      values.push_back(ToValue(arguments->list_value().values(next), nullptr, bindings));
    }
    return values;
  }

  client::CallOptions Options(const JsonObject& spec) const {
    client::CallOptions options;
    if (const Json* flag = Field(spec, "errno")) options.capture_errno = flag->bool_value();
    if (const Json* timeout = Field(spec, "timeout_ms")) {
      options.timeout = absl::Milliseconds(timeout->number_value());
    }
    if (const Json* types = Field(spec, "variadic_types")) {
      for (const Json& name : types->list_value().values()) {
        v1::TypeDescriptor type;
        type.set_named(name.string_value());
        options.variadic_types.push_back(type);
      }
    }
    return options;
  }

  // Checks a call's response (or failure) against `expect`.
  void CheckCall(const absl::StatusOr<v1::CallResponse>& response,
                 const JsonObject& expect, const client::Function* function) {
    ExpectOutcome(response.status(), expect, "call");
    if (!response.ok()) {
      if (const Json* crash = Field(expect, "crash")) CheckCrash(response.status(), *crash);
      return;
    }
    std::string why;
    if (const Json* result = Field(expect, "result")) {
      EXPECT_TRUE(Matches(*result, response->result(), &why)) << "result: " << why;
    }
    if (const Json* errno_value = Field(expect, "errno")) {
      EXPECT_EQ(response->errno_value(), static_cast<int>(errno_value->number_value()));
    }
    if (const Json* out = Field(expect, "out"); out != nullptr && function != nullptr) {
      for (const auto& [name, value] : out->struct_value().fields()) {
        int index = -1;
        for (int i = 0; i < function->type.parameters_size(); ++i) {
          if (function->type.parameters(i).name() == name) index = i;
        }
        auto it = response->out_values().find(static_cast<uint32_t>(index));
        ASSERT_NE(it, response->out_values().end()) << "no out value " << name;
        EXPECT_TRUE(Matches(value, it->second, &why)) << "out " << name << ": " << why;
      }
    }
  }

  static void CheckCrash(const absl::Status& status, const Json& crash) {
    std::optional<v1::CrashReport> report = client::CrashReportOf(status);
    ASSERT_TRUE(report.has_value()) << "no crash report in " << status;
    for (const auto& [key, value] : crash.struct_value().fields()) {
      if (key == "signal_name") {
        EXPECT_EQ(report->signal_name(), value.string_value());
      } else if (key == "function") {
        EXPECT_EQ(report->function(), value.string_value());
      } else if (key == "limit") {
        EXPECT_EQ(report->limit(), value.string_value());
      } else if (key == "syscall_name") {
        EXPECT_EQ(report->syscall_name(), value.string_value());
      } else if (key == "exit_code") {
        EXPECT_EQ(report->exit_code(), value.number_value());
      } else {
        ADD_FAILURE() << "unknown crash field " << key;
      }
    }
  }

  absl::StatusOr<std::unique_ptr<client::Session>> NewSession(const JsonObject& spec) {
    client::SessionOptions options;
    if (const Json* session = Field(spec, "session")) {
      const JsonObject& fields = session->struct_value();
      const std::string policy = StringField(fields, "restart_policy");
      if (policy == "restart") options.restart_policy = v1::RESTART_POLICY_RESTART;
      if (policy == "never") options.restart_policy = v1::RESTART_POLICY_NEVER;
      if (const Json* limits = Field(fields, "limits")) {
        const JsonObject& l = limits->struct_value();
        options.limits.set_address_space_bytes(UintField(l, "address_space_bytes"));
        options.limits.set_cpu_seconds(UintField(l, "cpu_seconds"));
        options.limits.set_open_files(UintField(l, "open_files"));
        options.limits.set_file_size_bytes(UintField(l, "file_size_bytes"));
      }
    }
    return client_->CreateSession(options);
  }

  // kind call, deadline, crash, closed_session.
  void RunCall(client::Session& session, const JsonObject& spec, bool close_first) {
    const JsonObject& expect = Field(spec, "expect")->struct_value();
    const std::string declaration = StringField(spec, "function");
    absl::StatusOr<client::Function> function = Prepare(session, spec, declaration);
    if (!function.ok()) {
      ExpectOutcome(function.status(), expect, "load/cdef/resolve");
      return;
    }
    if (close_first) {
      ASSERT_TRUE(session.Delete().ok());
    }
    const Bindings none;
    CheckCall(session.Call(*function, Arguments(*function, Field(spec, "arguments"), none),
                           Options(spec)),
              expect, &*function);
    if (const Json* after = Field(spec, "after")) {
      const JsonObject& next = after->struct_value();
      std::string next_declaration = StringField(next, "function");
      if (next_declaration.empty()) next_declaration = declaration;
      absl::StatusOr<client::Function> again = Resolve(session, next, next_declaration);
      const JsonObject& next_expect = Field(next, "expect")->struct_value();
      if (!again.ok()) {
        ExpectOutcome(again.status(), next_expect, "after: resolve");
        return;
      }
      CheckCall(session.Call(*again, Arguments(*again, Field(next, "arguments"), none),
                             Options(next)),
                next_expect, &*again);
    }
  }

  absl::StatusOr<v1::AllocateResponse> NewTyped(client::Session& session,
                                                const std::string& type_name,
                                                const Json& value) {
    v1::AllocateRequest request;
    request.set_session(session.id());
    request.mutable_type()->set_named(type_name);
    v1::TypeDescriptor type;
    type.set_named(type_name);
    *request.mutable_initial_value() = ToValue(value, TypeFor(type_name), {});
    v1::AllocateResponse response;
    grpc::ClientContext context;
    absl::Status status = client::StatusFromGrpc(
        client_->stub().Allocate(&context, request, &response));
    if (!status.ok()) return status;
    return response;
  }

  // The type named `name` (a cdef'd one, or an array of a scalar), for
  // converting values.
  const v1::TypeDescriptor* TypeFor(const std::string& name) {
    auto it = types_.find(name);
    if (it != types_.end()) return &it->second;
    absl::StatusOr<v1::ParseDeclarationsResponse> parsed =
        session_->ParseDeclarations(absl::StrCat("extern ", name, " conformance_probe;"));
    if (!parsed.ok() || parsed->variables_size() != 1) {
      // Arrays: "int[4]" is declared as "int conformance_probe[4]".
      const size_t bracket = name.find('[');
      if (bracket != std::string::npos) {
        parsed = session_->ParseDeclarations(absl::StrCat(
            "extern ", name.substr(0, bracket), " conformance_probe",
            name.substr(bracket), ";"));
      }
    }
    if (!parsed.ok() || parsed->variables_size() != 1) return nullptr;
    types_[name] = parsed->variables(0).type();
    return &types_[name];
  }

  absl::StatusOr<v1::ReadResponse> TypedRead(client::Session& session,
                                             const v1::PointerValue& pointer,
                                             const std::string& type_name) {
    v1::ReadRequest request;
    request.set_session(session.id());
    *request.mutable_pointer() = pointer;
    request.mutable_type()->set_named(type_name);
    v1::ReadResponse response;
    grpc::ClientContext context;
    absl::Status status =
        client::StatusFromGrpc(client_->stub().Read(&context, request, &response));
    if (!status.ok()) return status;
    return response;
  }

  absl::Status TypedWrite(client::Session& session, const v1::PointerValue& pointer,
                          const std::string& type_name, const Json& value) {
    v1::WriteRequest request;
    request.set_session(session.id());
    *request.mutable_pointer() = pointer;
    request.mutable_type()->set_named(type_name);
    *request.mutable_value() = ToValue(value, TypeFor(type_name), {});
    v1::WriteResponse response;
    grpc::ClientContext context;
    return client::StatusFromGrpc(client_->stub().Write(&context, request, &response));
  }

  void RunMemory(client::Session& session, const JsonObject& spec) {
    absl::StatusOr<client::Library> library =
        session.LoadLibrary(Substitute(StringField(spec, "library")));
    ASSERT_TRUE(library.ok()) << library.status();
    library_ = *library;
    if (const std::string cdef = StringField(spec, "cdef"); !cdef.empty()) {
      absl::StatusOr<v1::ParseDeclarationsResponse> parsed = session.ParseDeclarations(cdef);
      ASSERT_TRUE(parsed.ok()) << parsed.status();
      for (const v1::TypeDeclaration& d : parsed->types()) types_[d.name()] = d.type();
    }
    Bindings bindings;
    auto pointer_of = [&](const JsonObject& step) {
      v1::PointerValue pointer = bindings[StringField(step, "memory")].pointer_value();
      pointer.set_offset(pointer.offset() + UintField(step, "offset"));
      return pointer;
    };
    int index = 0;
    for (const Json& entry : Field(spec, "steps")->list_value().values()) {
      const JsonObject& step = entry.struct_value();
      const std::string op = StringField(step, "op");
      const std::string what = absl::StrCat("step ", index++, " (", op, ")");
      JsonObject expect;
      if (const Json* e = Field(step, "expect")) expect = e->struct_value();
      std::string why;
      if (op == "alloc") {
        absl::StatusOr<client::Memory> memory = session.Allocate(UintField(step, "size"));
        ExpectOutcome(memory.status(), expect, what);
        if (memory.ok()) bindings[StringField(step, "as")] = client::MakePointer(memory->handle);
      } else if (op == "new") {
        absl::StatusOr<v1::AllocateResponse> memory =
            NewTyped(session, StringField(step, "type"), *Field(step, "value"));
        ExpectOutcome(memory.status(), expect, what);
        if (memory.ok()) bindings[StringField(step, "as")] = client::MakePointer(memory->memory());
      } else if (op == "write") {
        const std::string bytes = absl::HexStringToBytes(StringField(step, "hex"));
        ExpectOutcome(session.Write(pointer_of(step), bytes), expect, what);
      } else if (op == "read") {
        absl::StatusOr<std::string> bytes =
            session.Read(pointer_of(step), UintField(step, "length"));
        ExpectOutcome(bytes.status(), expect, what);
        if (bytes.ok() && Field(expect, "hex") != nullptr) {
          EXPECT_EQ(absl::BytesToHexString(*bytes), StringField(expect, "hex")) << what;
        }
      } else if (op == "write_value") {
        ExpectOutcome(TypedWrite(session, pointer_of(step), StringField(step, "type"),
                                 *Field(step, "value")),
                      expect, what);
      } else if (op == "read_value") {
        absl::StatusOr<v1::ReadResponse> read =
            TypedRead(session, pointer_of(step), StringField(step, "type"));
        ExpectOutcome(read.status(), expect, what);
        if (read.ok() && Field(expect, "value") != nullptr) {
          EXPECT_TRUE(Matches(*Field(expect, "value"), read->value(), &why)) << what << ": " << why;
        }
      } else if (op == "free") {
        ExpectOutcome(session.Free(bindings[StringField(step, "memory")].pointer_value().handle()),
                      expect, what);
      } else if (op == "call") {
        absl::StatusOr<client::Function> function =
            Resolve(session, step, StringField(step, "function"));
        ASSERT_TRUE(function.ok()) << what << ": " << function.status();
        absl::StatusOr<v1::CallResponse> response = session.Call(
            *function, Arguments(*function, Field(step, "arguments"), bindings));
        CheckCall(response, expect, &*function);
        if (response.ok() && Field(step, "as") != nullptr) {
          v1::Value pointer;
          *pointer.mutable_pointer_value() = response->result().pointer_value();
          bindings[StringField(step, "as")] = pointer;
        }
      } else {
        ADD_FAILURE() << "unknown op " << op;
      }
    }
  }

  void RunCallback(client::Session& session, const JsonObject& spec) {
    const JsonObject& expect = Field(spec, "expect")->struct_value();
    const std::string declaration = StringField(spec, "function");
    absl::StatusOr<client::Function> function = Prepare(session, spec, declaration);
    ASSERT_TRUE(function.ok()) << function.status();
    const JsonObject& callback_spec = Field(spec, "callback")->struct_value();
    const std::string behaviour = StringField(callback_spec, "behaviour");

    std::atomic<int> invocations{0};
    absl::Mutex mu;
    std::set<int64_t> threads;
    std::string callback_handle;
    const client::Function target = *function;
    client::CallbackFunction body =
        [&](client::CallbackContext& context) -> absl::StatusOr<v1::Value> {
      ++invocations;
      {
        absl::MutexLock lock(&mu);
        threads.insert(context.invocation().native_thread_id);
      }
      const std::vector<v1::Value>& args = context.arguments();
      if (behaviour == "add") {
        int64_t sum = 0;
        for (const v1::Value& arg : args) sum += arg.int_value();
        return client::MakeInt(sum);
      }
      if (behaviour == "compare_ints") {
        int32_t a = 0, b = 0;
        absl::StatusOr<std::string> x = context.Read(args[0].pointer_value(), 4);
        absl::StatusOr<std::string> y = context.Read(args[1].pointer_value(), 4);
        if (!x.ok()) return x.status();
        if (!y.ok()) return y.status();
        std::memcpy(&a, x->data(), 4);
        std::memcpy(&b, y->data(), 4);
        return client::MakeInt((a > b) - (a < b));
      }
      if (behaviour == "store_int") {
        const int32_t value = static_cast<int32_t>(args[1].int_value());
        absl::Status written = context.Write(
            args[0].pointer_value(),
            std::string(reinterpret_cast<const char*>(&value), sizeof(value)));
        if (!written.ok()) return written;
        return v1::Value();
      }
      if (behaviour == "nest") {
        const int64_t depth = args[0].int_value();
        if (depth == 0) return client::MakeInt(0);
        v1::Value self;
        self.set_callback_handle(callback_handle);
        absl::StatusOr<v1::CallResponse> response =
            context.Call(target, {self, client::MakeInt(depth - 1)});
        if (!response.ok()) return response.status();
        return response->result();
      }
      if (behaviour == "fail") return absl::InternalError("conformance: the callback fails");
      return absl::InvalidArgumentError("unknown behaviour " + behaviour);
    };
    absl::StatusOr<client::Callback> callback =
        session.RegisterCallback(StringField(callback_spec, "declaration"), body);
    ASSERT_TRUE(callback.ok()) << callback.status();
    callback_handle = callback->handle;
    Bindings bindings = {{"callback", callback->value()}};
    std::string memory_type;
    if (const Json* memory = Field(spec, "memory")) {
      memory_type = StringField(memory->struct_value(), "type");
      absl::StatusOr<v1::AllocateResponse> allocated =
          NewTyped(session, memory_type, *Field(memory->struct_value(), "value"));
      ASSERT_TRUE(allocated.ok()) << allocated.status();
      bindings["memory"] = client::MakePointer(allocated->memory());
    }
    CheckCall(session.Call(*function, Arguments(*function, Field(spec, "arguments"), bindings),
                           Options(spec)),
              expect, &*function);
    if (const Json* count = Field(expect, "invocations")) {
      EXPECT_EQ(invocations.load(), static_cast<int>(count->number_value()));
    }
    if (const Json* minimum = Field(expect, "min_threads")) {
      absl::MutexLock lock(&mu);
      EXPECT_GE(threads.size(), static_cast<size_t>(minimum->number_value()));
    }
    if (const Json* memory = Field(expect, "memory")) {
      absl::StatusOr<v1::ReadResponse> read =
          TypedRead(session, bindings["memory"].pointer_value(), memory_type);
      ASSERT_TRUE(read.ok()) << read.status();
      std::string why;
      EXPECT_TRUE(Matches(*memory, read->value(), &why)) << "memory: " << why;
    }
    if (const Json* after = Field(spec, "after")) {
      const JsonObject& next = after->struct_value();
      absl::StatusOr<client::Function> again =
          Resolve(session, next, StringField(next, "function"));
      ASSERT_TRUE(again.ok()) << again.status();
      CheckCall(session.Call(*again, Arguments(*again, Field(next, "arguments"), bindings)),
                Field(next, "expect")->struct_value(), &*again);
    }
  }

  void SetUp() override {
    ASSERT_NE(daemon_, nullptr);
    absl::StatusOr<std::unique_ptr<client::Client>> client =
        client::Client::Connect(daemon_->address(), absl::Seconds(10));
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = std::move(*client);
  }

  void TearDown() override {
    session_.reset();
    client_.reset();
  }

  static inline testing::Daemon* daemon_ = nullptr;
  static inline std::string not_allowed_dir_;
  std::unique_ptr<client::Client> client_;
  std::unique_ptr<client::Session> session_;
  client::Library library_;
  std::map<std::string, v1::TypeDescriptor> types_;
};

TEST_P(ConformanceTest, Scenario) {
  const JsonObject& spec = ScenarioNamed(GetParam());
  ASSERT_FALSE(spec.fields().empty()) << "no scenario " << GetParam();
  const std::string kind = StringField(spec, "kind");
  absl::StatusOr<std::unique_ptr<client::Session>> session = NewSession(spec);
  if (kind == "session") {
    ExpectOutcome(session.status(), Field(spec, "expect")->struct_value(), "session");
    return;
  }
  ASSERT_TRUE(session.ok()) << session.status();
  session_ = std::move(*session);
  if (kind == "call" || kind == "deadline" || kind == "crash") {
    RunCall(*session_, spec, /*close_first=*/false);
  } else if (kind == "closed_session") {
    RunCall(*session_, spec, /*close_first=*/true);
  } else if (kind == "memory") {
    RunMemory(*session_, spec);
  } else if (kind == "callback") {
    RunCallback(*session_, spec);
  } else {
    FAIL() << "unknown kind " << kind;
  }
}

std::string TestName(const ::testing::TestParamInfo<std::string>& info) {
  std::string name;
  for (char c : info.param) name += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  return name;
}

INSTANTIATE_TEST_SUITE_P(Scenarios, ConformanceTest,
                         ::testing::ValuesIn(ScenarioNames()), TestName);

}  // namespace
}  // namespace ffid
