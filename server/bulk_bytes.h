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
//   whose bytes it leaves in gRPC's receive buffers as a list of pieces;
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

// A serialized WriteRequest whose `data` stays in the received buffer.
class WriteRequestView {
 public:
  // Takes `buffer` (a serialized WriteRequest) and parses it. As protobuf
  // does, a later `data` field replaces an earlier one. INVALID_ARGUMENT
  // (ERROR_REASON_INVALID_REQUEST) if it does not parse.
  static absl::StatusOr<std::unique_ptr<WriteRequestView>> Parse(
      grpc::ByteBuffer buffer);

  WriteRequestView(const WriteRequestView&) = delete;
  WriteRequestView& operator=(const WriteRequestView&) = delete;
  ~WriteRequestView();

  // Every field but `data` (whose field is empty here).
  const v1::WriteRequest& head() const { return head_; }
  // The bytes of `data`, in order; they point into the buffer this view
  // owns and stay valid as long as the view.
  absl::Span<const absl::string_view> data() const { return data_; }
  uint64_t data_size() const { return data_size_; }

  // Copies the bytes of `data` to `out` (data_size() bytes).
  void CopyDataTo(char* out) const;
  // The whole request, `data` included (one copy of the bytes).
  v1::WriteRequest ToMessage() const;

 private:
  WriteRequestView();

  struct Buffers;
  // The received buffer and the reader whose pieces data_ points into.
  std::unique_ptr<Buffers> buffers_;
  v1::WriteRequest head_;
  std::vector<absl::string_view> data_;
  uint64_t data_size_ = 0;
};

// A serialized ReadResponse with `data` = `bytes` and no other field: the
// field's tag and length, then the bytes copied once into gRPC's buffer.
grpc::ByteBuffer ReadResponseBuffer(absl::string_view bytes);

// `message` serialized into a buffer, as gRPC serializes a protobuf reply.
grpc::ByteBuffer SerializedBuffer(const google::protobuf::MessageLite& message);

// Parses `buffer` into `*message` as gRPC parses a protobuf request;
// INVALID_ARGUMENT (ERROR_REASON_INVALID_REQUEST) if it does not parse.
[[nodiscard]] absl::Status ParsedMessage(grpc::ByteBuffer& buffer,
                                         google::protobuf::MessageLite* message);

}  // namespace ffid::server

#endif  // FFID_SERVER_BULK_BYTES_H_
