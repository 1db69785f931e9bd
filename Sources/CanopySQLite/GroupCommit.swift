import GRDB

/// Batches writes from many concurrent callers into one transaction, so one fsync acknowledges many submissions.
///
/// The first caller to find no batch in flight leads: it commits everything queued so far. Callers that
/// arrive meanwhile queue behind it; when the leader's batch is durable it wakes its batch's callers and hands
/// the lead to the first caller of the next batch, so no caller ever waits for more than its own batch plus
/// the one before it.
actor GroupCommit {
    typealias Operation = @Sendable (Database) throws -> Void

    private enum Wake {
        case committed
        case failed(any Error)
        case lead
    }

    private struct Waiter {
        var operation: Operation
        var continuation: CheckedContinuation<Wake, Never>?
    }

    private let writer: DatabasePool
    private var queued: [Waiter] = []
    private var leading = false

    init(writer: DatabasePool) {
        self.writer = writer
    }

    /// Runs `operation` inside a batched write transaction; returns once the transaction is durable.
    func perform(_ operation: @escaping Operation) async throws {
        if leading {
            let wake = await withCheckedContinuation { continuation in
                queued.append(Waiter(operation: operation, continuation: continuation))
            }
            switch wake {
            case .committed: return
            case .failed(let error): throw error
            case .lead: break
            }
        } else {
            leading = true
            queued.append(Waiter(operation: operation, continuation: nil))
        }
        try await lead()
    }

    /// Commits everything queued; the caller's own operation is in this batch (with a nil continuation).
    private func lead() async throws {
        let batch = queued
        queued = []
        var ownError: (any Error)?
        do {
            try await writer.write { db in
                for waiter in batch { try waiter.operation(db) }
            }
            for waiter in batch { waiter.continuation?.resume(returning: .committed) }
        } catch {
            // One bad operation must not fail its neighbours: retry each on its own.
            for waiter in batch {
                do {
                    try await writer.write { db in try waiter.operation(db) }
                    waiter.continuation?.resume(returning: .committed)
                } catch {
                    if let c = waiter.continuation { c.resume(returning: .failed(error)) } else { ownError = error }
                }
            }
        }
        if queued.isEmpty {
            leading = false
        } else {
            // Hand the lead to the next batch's first caller; its operation goes in with the rest.
            let next = queued.removeFirst()
            queued.insert(Waiter(operation: next.operation, continuation: nil), at: 0)
            next.continuation?.resume(returning: .lead)
        }
        if let ownError { throw ownError }
    }
}
