#include "server/worker/namespaces.h"
#include <sched.h>
namespace ffid::worker {

int NamespaceCloneFlags(const WorkerPolicy& policy) {
  int flags = 0;
  if (policy.user_namespace()) flags |= CLONE_NEWUSER;
  if (policy.network_namespace()) flags |= CLONE_NEWNET;
  if (policy.mount_namespace()) flags |= CLONE_NEWNS;
  if (policy.pid_namespace()) flags |= CLONE_NEWPID;
  if (policy.ipc_namespace()) flags |= CLONE_NEWIPC;
  if (policy.uts_namespace()) flags |= CLONE_NEWUTS;
  return flags;
}

}  // namespace ffid::worker
