// The Linux namespaces a worker policy asks for, as CLONE_NEW* flags.
//
// One mapping for the two places that create them: the zygote clones a new
// worker straight into them, and a worker started without the zygote
// unshares them itself (server/worker/sandbox.h). Kept apart from the
// sandbox so that the daemon's side of the zygote does not link libseccomp.
// A pure function: thread-safe.
#ifndef FFID_SERVER_WORKER_NAMESPACES_H_
#define FFID_SERVER_WORKER_NAMESPACES_H_

#include "server/worker/protocol.pb.h"

namespace ffid::worker {

// CLONE_NEWUSER | CLONE_NEWNET | ... for each namespace `policy` enables;
// 0 when it enables none.
[[nodiscard]] int NamespaceCloneFlags(const WorkerPolicy& policy);

}  // namespace ffid::worker

#endif  // FFID_SERVER_WORKER_NAMESPACES_H_
