package agentpb

// Protocol is the revision of the agent protocol this build speaks, sent in
// Hello. Revision 2 is typed task results (TaskResult's oneof and
// ErrorReason). Agents built before Hello carried a revision send 0, even
// those that already sent typed results.
const Protocol = 2

// MinProtocol is the oldest agent revision a server accepts: an older agent
// is refused at Hello with a message saying to upgrade it, instead of its
// results failing one by one. Hence agents are upgraded before servers.
const MinProtocol = 2
