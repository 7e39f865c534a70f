// Bulk bytes of Read and Write on the wire, without building the message.
//
// A Write piece carries up to 1 MiB in WriteRequest.data and a Read piece
// answers as much in ReadResponse.data. Parsed or serialized as messages,
// those bytes are copied once more than needed on each side: into the
// parsed WriteRequest's string (then into the arena), and into the
// ReadResponse's string (then into gRPC's serialized buffer). The service's
// Read and Write take and give gRPC's raw buffers instead
// (server/service.cc) and use these helpers:
//
// - WriteRequestView parses a serialized WriteRequest except its `data`,
//   whose bytes it leaves in gRPC's receive buffers as a list of pieces
//   (WriteStreamRequestView the same for each message of a WriteStream);
// - ReadResponseBuffer serializes a ReadResponse holding only `data` with
//   one copy of the bytes (straight into the buffer gRPC sends);
// - SerializedBuffer / ParsedMessage do the same as gRPC's own protobuf
//   (de)serialization, for requests that take the ordinary path.
//
// Thread-compatible: a WriteRequestView is used by one thread at a time.
#ifndef FFID_SERVER_BULK_BYTES_H_
#define FFID_SERVER_BULK_BYTES_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "ffid/v1/ffid.pb.h"
#include "google/protobuf/message_lite.h"
#include "grpcpp/support/byte_buffer.h"

namespace ffid::server {

// A serialized message `Head` (WriteRequest, WriteStreamRequest) whose
// bytes field number `kDataField` stays in the received buffer. Explicitly
// instantiated for the two aliases below only.
template <typename Head, int kDataField>
class BytesFieldView {
 public:
  // Takes `buffer` (a serialized `Head`) and parses it. As protobuf does, a
  // later data field replaces an earlier one. INVALID_ARGUMENT
  // (ERROR_REASON_INVALID_REQUEST) if it does not parse.
  static absl::StatusOr<std::unique_ptr<BytesFieldView>> Parse(
      grpc::ByteBuffer buffer);

  BytesFieldView(const BytesFieldView&) = delete;
  BytesFieldView& operator=(const BytesFieldView&) = delete;
  ~BytesFieldView();

  // Every field but the data field (which is empty here).
  const Head& head() const { return head_; }
  // The bytes of the data field, in order; they point into the buffer this
  // view owns and stay valid as long as the view.
  absl::Span<const absl::string_view> data() const { return data_; }
  uint64_t data_size() const { return data_size_; }

  // Copies the bytes of the data field to `out` (data_size() bytes).
  void CopyDataTo(char* out) const;
  // The whole message, the data field included (one copy of the bytes).
  Head ToMessage() const;

 private:
  BytesFieldView();

  struct Buffers;
  // The received buffer and the reader whose pieces data_ points into.
  std::unique_ptr<Buffers> buffers_;
  Head head_;
  std::vector<absl::string_view> data_;
  uint64_t data_size_ = 0;
};

// A unary Write's request, its `data` left in gRPC's buffers.
using WriteRequestView =
    BytesFieldView<v1::WriteRequest, v1::WriteRequest::kDataFieldNumber>;
// One message of a WriteStream, its `data` left in gRPC's buffers.
using WriteStreamRequestView =
    BytesFieldView<v1::WriteStreamRequest,
                   v1::WriteStreamRequest::kDataFieldNumber>;

// A serialized ReadResponse with `data` = `bytes` and no other field: the
// field's tag and length, then the bytes copied once into gRPC's buffer.
// A ReadStreamResponse with the same `data` is the same bytes (its `data`
// is field 1 too).
grpc::ByteBuffer ReadResponseBuffer(absl::string_view bytes);

// The same message without copying the bytes: `bytes` (a slice lent to
// gRPC, e.g. of a shared-memory arena) follows a slice holding the field's
// tag and length.
grpc::ByteBuffer ReadResponseAround(grpc::Slice bytes);

// `message` serialized into a buffer, as gRPC serializes a protobuf reply.
grpc::ByteBuffer SerializedBuffer(const google::protobuf::MessageLite& message);

// Parses `buffer` into `*message` as gRPC parses a protobuf request;
// INVALID_ARGUMENT (ERROR_REASON_INVALID_REQUEST) if it does not parse.
[[nodiscard]] absl::Status ParsedMessage(grpc::ByteBuffer& buffer,
                                         google::protobuf::MessageLite* message);

}  // namespace ffid::server

#endif  // FFID_SERVER_BULK_BYTES_H_
