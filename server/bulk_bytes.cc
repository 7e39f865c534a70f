#include "server/bulk_bytes.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "ffi/errors.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/wire_format_lite.h"
#include "grpcpp/impl/codegen/proto_utils.h"
#include "grpcpp/support/proto_buffer_reader.h"
#include "grpcpp/support/slice.h"

namespace ffid::server {
namespace {

using google::protobuf::internal::WireFormatLite;

absl::Status NotParsed(absl::string_view what) {
  return MakeError(absl::StatusCode::kInvalidArgument,
                   v1::ERROR_REASON_INVALID_REQUEST,
                   absl::StrCat("the ", what, " does not parse"));
}

}  // namespace

template <typename Head, int kDataField>
struct BytesFieldView<Head, kDataField>::Buffers {
  explicit Buffers(grpc::ByteBuffer taken)
      : buffer(std::move(taken)), reader(&buffer) {}
  grpc::ByteBuffer buffer;
  // Owns decompressed copies, should gRPC hand over a compressed buffer.
  grpc::ProtoBufferReader reader;
};

template <typename Head, int kDataField>
BytesFieldView<Head, kDataField>::BytesFieldView() = default;
template <typename Head, int kDataField>
BytesFieldView<Head, kDataField>::~BytesFieldView() = default;

template <typename Head, int kDataField>
absl::StatusOr<std::unique_ptr<BytesFieldView<Head, kDataField>>>
BytesFieldView<Head, kDataField>::Parse(grpc::ByteBuffer buffer) {
  const std::string what = absl::StrCat(Head().GetTypeName(), " message");
  std::unique_ptr<BytesFieldView> view(new BytesFieldView());
  const size_t total = buffer.Length();
  view->buffers_ = std::make_unique<Buffers>(std::move(buffer));
  if (!view->buffers_->reader.status().ok()) return NotParsed(what);
  // Every field but the data field is copied into `head` and parsed as a
  // message; the bytes of the data field are located where the reader has
  // them.
  std::string head;
  google::protobuf::io::StringOutputStream head_stream(&head);
  {
    google::protobuf::io::CodedOutputStream head_output(&head_stream);
    google::protobuf::io::CodedInputStream input(&view->buffers_->reader);
    const uint32_t data_tag = WireFormatLite::MakeTag(
        kDataField, WireFormatLite::WIRETYPE_LENGTH_DELIMITED);
    while (const uint32_t tag = input.ReadTag()) {
      if (tag != data_tag) {
        if (!WireFormatLite::SkipField(&input, tag, &head_output)) {
          return NotParsed(what);
        }
        continue;
      }
      // A later data field replaces an earlier one.
      view->data_.clear();
      view->data_size_ = 0;
      uint64_t left = 0;
      if (!input.ReadVarint64(&left)) return NotParsed(what);
      view->data_size_ = left;
      while (left > 0) {
        const void* chunk = nullptr;
        int size = 0;
        if (!input.GetDirectBufferPointer(&chunk, &size) || size <= 0) {
          return NotParsed(what);
        }
        const uint64_t take = std::min<uint64_t>(left, size);
        view->data_.emplace_back(static_cast<const char*>(chunk), take);
        input.Skip(static_cast<int>(take));
        left -= take;
      }
    }
    if (static_cast<size_t>(input.CurrentPosition()) != total) {
      return NotParsed(what);
    }
  }
  if (!view->head_.ParseFromString(head)) return NotParsed(what);
  return view;
}

template <typename Head, int kDataField>
void BytesFieldView<Head, kDataField>::CopyDataTo(char* out) const {
  for (const absl::string_view chunk : data_) {
    std::memcpy(out, chunk.data(), chunk.size());
    out += chunk.size();
  }
}

template <typename Head, int kDataField>
Head BytesFieldView<Head, kDataField>::ToMessage() const {
  Head message = head_;
  std::string* data = message.mutable_data();
  data->resize(data_size_);
  CopyDataTo(data->data());
  return message;
}

template class BytesFieldView<v1::WriteRequest,
                              v1::WriteRequest::kDataFieldNumber>;
template class BytesFieldView<v1::WriteStreamRequest,
                              v1::WriteStreamRequest::kDataFieldNumber>;

grpc::ByteBuffer ReadResponseBuffer(absl::string_view bytes) {
  const uint32_t tag =
      WireFormatLite::MakeTag(v1::ReadResponse::kDataFieldNumber,
                              WireFormatLite::WIRETYPE_LENGTH_DELIMITED);
  const size_t head_size =
      google::protobuf::io::CodedOutputStream::VarintSize32(tag) +
      google::protobuf::io::CodedOutputStream::VarintSize64(bytes.size());
  // An empty `data` is not serialized at all (proto3), as protobuf would:
  // the message is empty.
  if (bytes.empty()) {
    grpc::Slice empty;
    return grpc::ByteBuffer(&empty, 1);
  }
  grpc::Slice slice(head_size + bytes.size());
  // The slice is fresh and ours alone: fill it in.
  auto* out = const_cast<uint8_t*>(slice.begin());
  out = google::protobuf::io::CodedOutputStream::WriteVarint32ToArray(tag, out);
  out = google::protobuf::io::CodedOutputStream::WriteVarint64ToArray(
      bytes.size(), out);
  std::memcpy(out, bytes.data(), bytes.size());
  return grpc::ByteBuffer(&slice, 1);
}

grpc::ByteBuffer ReadResponseAround(grpc::Slice bytes) {
  if (bytes.size() == 0) {
    grpc::Slice empty;
    return grpc::ByteBuffer(&empty, 1);
  }
  const uint32_t tag =
      WireFormatLite::MakeTag(v1::ReadResponse::kDataFieldNumber,
                              WireFormatLite::WIRETYPE_LENGTH_DELIMITED);
  uint8_t head[16];
  uint8_t* end =
      google::protobuf::io::CodedOutputStream::WriteVarint32ToArray(tag, head);
  end = google::protobuf::io::CodedOutputStream::WriteVarint64ToArray(
      bytes.size(), end);
  grpc::Slice slices[2] = {grpc::Slice(head, end - head), std::move(bytes)};
  return grpc::ByteBuffer(slices, 2);
}

grpc::ByteBuffer SerializedBuffer(
    const google::protobuf::MessageLite& message) {
  grpc::ByteBuffer buffer;
  bool own_buffer = false;
  // Fails only for messages over 2 GiB, which the daemon never answers.
  (void)grpc::SerializationTraits<google::protobuf::MessageLite>::Serialize(
      message, &buffer, &own_buffer);
  return buffer;
}

absl::Status ParsedMessage(grpc::ByteBuffer& buffer,
                           google::protobuf::MessageLite* message) {
  if (!grpc::SerializationTraits<google::protobuf::MessageLite>::Deserialize(
           &buffer, message)
           .ok()) {
    return NotParsed(absl::StrCat(message->GetTypeName(), " request"));
  }
  return absl::OkStatus();
}

}  // namespace ffid::server
