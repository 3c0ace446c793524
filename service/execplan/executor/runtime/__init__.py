"""The asyncio shell around the pure core: the engine and the parts it is made of.

Each part owns its state and is handed the collaborators it needs (docs/architecture.md
has the table): `engine` (lifecycle and the public API), `inbox` and `pump` (inputs,
and the decide -> commit -> act round), `round` (one round's bookkeeping),
`executions` (live states and the one `forget`), `leases`, `sessions` and `workers`
(worker streams, who holds what), `queues` and `scheduler` (fair dispatch behind
gates), `deadlines`, `breakers`, `acting` (effects after the commit),
`checkpoints`, `background`, `recovery`, `reads` and `hub` (reads and watches),
`replicas` (several executors on one database), `secrets`, `config`.
"""
