import Foundation

/// Work that blocks (a connect with a timeout, a walk of /proc, a child process to wait for) runs on a thread of
/// its own: Swift's cooperative pool has one thread per core, and two blocked callers on a 2-core machine would
/// stall every request and the controller.
package enum Blocking {
    /// Runs `body` on a new thread and returns its result.
    package static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread { continuation.resume(with: Result { try body() }) }
        }
    }

    /// Runs `body`, which cannot fail, on a new thread.
    package static func run<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            Thread.detachNewThread { continuation.resume(returning: body()) }
        }
    }
}
