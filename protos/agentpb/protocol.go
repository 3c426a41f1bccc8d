package agentpb

// Protocol is the revision of the agent protocol this build speaks, sent in
// Hello. Revision 2 introduced typed task results (TaskResult's oneof and
// ErrorReason); a revision-0 agent (before Hello carried one) sends results
// the server cannot read.
const Protocol = 2

// MinProtocol is the oldest agent revision a server accepts: an older agent
// is refused at Hello with a message saying to upgrade it, instead of its
// results failing one by one.
const MinProtocol = 2
