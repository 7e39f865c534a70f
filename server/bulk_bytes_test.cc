#include "server/bulk_bytes.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "grpcpp/support/slice.h"
#include "gtest/gtest.h"

namespace ffid::server {
namespace {

using ::testing::HasSubstr;

// `bytes` as gRPC would hand them over, cut into slices of `slice_size`.
grpc::ByteBuffer InSlices(const std::string& bytes, size_t slice_size) {
  std::vector<grpc::Slice> slices;
  for (size_t at = 0; at < bytes.size(); at += slice_size) {
    const std::string part = bytes.substr(at, slice_size);
    slices.emplace_back(part.data(), part.size());
  }
  return grpc::ByteBuffer(slices.data(), slices.size());
}

// The bytes of a buffer, joined.
std::string Joined(grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(buffer.Dump(&slices).ok());
  std::string joined;
  for (const grpc::Slice& slice : slices) {
    joined.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  return joined;
}

v1::WriteRequest SampleWrite(std::string data) {
  v1::WriteRequest request;
  request.set_session("s-1");
  request.mutable_pointer()->set_handle("mem_abc_7");
  request.mutable_pointer()->set_offset(4096);
  request.set_data(std::move(data));
  request.set_flexible_length(3);
  return request;
}

std::string Pattern(size_t size) {
  std::string bytes(size, '\0');
  for (size_t i = 0; i < size; ++i) bytes[i] = static_cast<char>(i * 7 + 1);
  return bytes;
}

TEST(WriteRequestViewTest, LeavesTheDataWhereItIsAndParsesTheRest) {
  const v1::WriteRequest request = SampleWrite(Pattern(100000));
  // Slices of 333 bytes: the data field's bytes span hundreds of them.
  absl::StatusOr<std::unique_ptr<WriteRequestView>> view =
      WriteRequestView::Parse(InSlices(request.SerializeAsString(), 333));
  ASSERT_TRUE(view.ok()) << view.status();
  EXPECT_EQ((*view)->head().session(), "s-1");
  EXPECT_EQ((*view)->head().pointer().handle(), "mem_abc_7");
  EXPECT_EQ((*view)->head().pointer().offset(), 4096u);
  EXPECT_EQ((*view)->head().flexible_length(), 3u);
  EXPECT_TRUE((*view)->head().data().empty());
  EXPECT_EQ((*view)->data_size(), 100000u);
  EXPECT_GT((*view)->data().size(), 100u);
  std::string copied((*view)->data_size(), '\0');
  (*view)->CopyDataTo(copied.data());
  EXPECT_EQ(copied, request.data());
  const v1::WriteRequest whole = (*view)->ToMessage();
  EXPECT_EQ(whole.SerializeAsString(), request.SerializeAsString());
}

TEST(WriteRequestViewTest, TakesTypedWritesAndEmptyData) {
  v1::WriteRequest request;
  request.set_session("s-2");
  request.mutable_pointer()->set_address(0x1000);
  request.mutable_type()->set_named("my_int");
  request.mutable_value()->set_int_value(-5);
  absl::StatusOr<std::unique_ptr<WriteRequestView>> view =
      WriteRequestView::Parse(InSlices(request.SerializeAsString(), 4));
  ASSERT_TRUE(view.ok()) << view.status();
  EXPECT_EQ((*view)->data_size(), 0u);
  EXPECT_TRUE((*view)->data().empty());
  EXPECT_EQ((*view)->ToMessage().SerializeAsString(),
            request.SerializeAsString());
}

TEST(WriteRequestViewTest, ALaterDataFieldReplacesAnEarlierOne) {
  // The wire format allows a field twice; protobuf keeps the last.
  const std::string first = SampleWrite("first bytes").SerializeAsString();
  v1::WriteRequest second;
  second.set_data("second");
  const std::string both = first + second.SerializeAsString();
  v1::WriteRequest parsed;
  ASSERT_TRUE(parsed.ParseFromString(both));
  absl::StatusOr<std::unique_ptr<WriteRequestView>> view =
      WriteRequestView::Parse(InSlices(both, 5));
  ASSERT_TRUE(view.ok()) << view.status();
  EXPECT_EQ((*view)->ToMessage().SerializeAsString(),
            parsed.SerializeAsString());
  EXPECT_EQ((*view)->data_size(), 6u);
}

TEST(WriteRequestViewTest, RefusesWhatDoesNotParse) {
  std::string bytes = SampleWrite(Pattern(1000)).SerializeAsString();
  // Cut inside the data field.
  bytes.resize(bytes.size() - 10);
  absl::StatusOr<std::unique_ptr<WriteRequestView>> view =
      WriteRequestView::Parse(InSlices(bytes, 64));
  ASSERT_FALSE(view.ok());
  EXPECT_EQ(view.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(view.status().message(), HasSubstr("does not parse"));
}

TEST(ReadResponseBufferTest, IsAReadResponseWithTheData) {
  for (const size_t size : {size_t{0}, size_t{1}, size_t{127}, size_t{128},
                            size_t{1} << 20}) {
    const std::string bytes = Pattern(size);
    grpc::ByteBuffer buffer = ReadResponseBuffer(bytes);
    v1::ReadResponse expected;
    expected.set_data(bytes);
    EXPECT_EQ(Joined(buffer), expected.SerializeAsString()) << size;
    v1::ReadResponse parsed;
    ASSERT_TRUE(ParsedMessage(buffer, &parsed).ok()) << size;
    EXPECT_EQ(parsed.data(), bytes);
  }
}

// The lent bytes are not copied: the buffer's last slice is the one given,
// and the message parses as a ReadStreamResponse too.
TEST(ReadResponseAroundTest, WrapsTheSliceGivenInAReadResponse) {
  for (const size_t size : {size_t{0}, size_t{1}, size_t{128},
                            size_t{1} << 20}) {
    const std::string bytes = Pattern(size);
    grpc::ByteBuffer buffer =
        ReadResponseAround(grpc::Slice(bytes.data(), bytes.size()));
    v1::ReadResponse expected;
    expected.set_data(bytes);
    EXPECT_EQ(Joined(buffer), expected.SerializeAsString()) << size;
    v1::ReadStreamResponse parsed;
    ASSERT_TRUE(ParsedMessage(buffer, &parsed).ok()) << size;
    EXPECT_EQ(parsed.data(), bytes);
  }
  static const char kLent[] = "lent bytes";
  grpc::ByteBuffer buffer = ReadResponseAround(grpc::Slice(
      const_cast<char*>(kLent), sizeof(kLent) - 1, [](void*) {}, nullptr));
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(buffer.Dump(&slices).ok());
  ASSERT_EQ(slices.size(), 2u);
  EXPECT_EQ(static_cast<const void*>(slices[1].begin()),
            static_cast<const void*>(kLent));
}

TEST(SerializedBufferTest, RoundTripsAMessage) {
  const v1::WriteRequest request = SampleWrite(Pattern(5000));
  grpc::ByteBuffer buffer = SerializedBuffer(request);
  EXPECT_EQ(Joined(buffer), request.SerializeAsString());
  v1::WriteRequest parsed;
  ASSERT_TRUE(ParsedMessage(buffer, &parsed).ok());
  EXPECT_EQ(parsed.SerializeAsString(), request.SerializeAsString());
}

TEST(ParsedMessageTest, RefusesWhatDoesNotParse) {
  grpc::ByteBuffer buffer = InSlices(std::string("\x0a\x05" "ab", 4), 2);
  v1::ReadRequest request;
  const absl::Status status = ParsedMessage(buffer, &request);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("does not parse"));
}

}  // namespace
}  // namespace ffid::server
