#include "server/worker/namespaces.h"
#include <sched.h>
#include "gtest/gtest.h"

namespace ffid::worker {
namespace {

TEST(NamespaceCloneFlagsTest, NoNamespaceAskedIsZero) {
  EXPECT_EQ(NamespaceCloneFlags(WorkerPolicy()), 0);
}

TEST(NamespaceCloneFlagsTest, EachNamespaceHasItsOwnFlag) {
  WorkerPolicy policy;
  policy.set_network_namespace(true);
  EXPECT_EQ(NamespaceCloneFlags(policy), CLONE_NEWNET);
  policy.set_user_namespace(true);
  policy.set_mount_namespace(true);
  policy.set_pid_namespace(true);
  policy.set_ipc_namespace(true);
  policy.set_uts_namespace(true);
  EXPECT_EQ(NamespaceCloneFlags(policy),
            CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWPID |
                CLONE_NEWIPC | CLONE_NEWUTS);
}

}  // namespace
}  // namespace ffid::worker
