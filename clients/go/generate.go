package ffid

// The generated code in ffidpb/ comes from proto/ffid/v1/*.proto through
// protoc (Debian's protobuf-compiler) and the protoc-gen-go and
// protoc-gen-go-grpc versions that go.mod pins as tools. Regenerate after
// changing the API with
//
//	go generate ./...
//
// and commit the result; never edit ffidpb/ by hand.
//go:generate sh -c "protoc -I../../proto --plugin=protoc-gen-go=$(go tool -n protoc-gen-go) --plugin=protoc-gen-go-grpc=$(go tool -n protoc-gen-go-grpc) --go_out=. --go_opt=module=github.com/ffid/ffid/clients/go --go-grpc_out=. --go-grpc_opt=module=github.com/ffid/ffid/clients/go ffid/v1/types.proto ffid/v1/errors.proto ffid/v1/ffid.proto"
