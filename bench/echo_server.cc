// A bare gRPC echo server (bench/echo_service.proto) in its own process, the
// baseline for clients in other languages: bench/python_call_latency.py times
// a Python Echo against it and a Python ffid Call against the daemon.
//
//   echo_server unix:/path/to/echo.sock
//
// Prints "echo_server: listening on ADDRESS" to stderr once it accepts
// calls; stops on SIGTERM or SIGINT.
#include <signal.h>

#include <cstdio>
#include <memory>
#include <string>

#include "bench/echo_service.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace ffid::bench {
namespace {

class EchoServiceImpl final : public EchoService::Service {
  grpc::Status Echo(grpc::ServerContext*, const EchoRequest* request,
                    EchoResponse* response) override {
    response->set_payload(request->payload());
    return grpc::Status::OK;
  }
  grpc::Status EchoStream(
      grpc::ServerContext*,
      grpc::ServerReaderWriter<EchoResponse, EchoRequest>* stream) override {
    EchoRequest request;
    EchoResponse response;
    while (stream->Read(&request)) {
      response.set_payload(request.payload());
      if (!stream->Write(response)) break;
    }
    return grpc::Status::OK;
  }
};

int Main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s unix:/path/to/socket\n", argv[0]);
    return 2;
  }
  // Wait for the stop signals synchronously in this thread; every thread
  // gRPC starts inherits the mask.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  const std::string address = argv[1];
  EchoServiceImpl service;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials());
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr) {
    std::fprintf(stderr, "echo_server: cannot listen on %s\n", address.c_str());
    return 1;
  }
  std::fprintf(stderr, "echo_server: listening on %s\n", address.c_str());
  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  server->Shutdown();
  return 0;
}

}  // namespace
}  // namespace ffid::bench

int main(int argc, char** argv) { return ffid::bench::Main(argc, argv); }
