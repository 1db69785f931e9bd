#if canImport(Glibc)
import Glibc
#endif
import CanopyCore
import Synchronization

/// Per-task identities for a server that runs as root, as systemd's DynamicUser and Slurm's per-job users do:
/// each running task gets a uid (and the gid of the same number) of its own from a range, with no login, no home
/// and no entry in the user database. Two tasks therefore cannot signal, trace or read the `/proc` files of each
/// other, and cannot open each other's working directories (mode 0700, owned by the task).
///
/// A uid is handed out round-robin, so a freed one is reused as late as possible; uids that the user database
/// knows (real users) are skipped. The server kills every process of a uid before it frees it (see
/// `canopy-shim --kill-uid`), so no process of an earlier task can be waiting for the next one.
public final class TaskIdentities: Sendable {
    /// The default range: systemd's for dynamic users.
    public static let defaultRange: ClosedRange<UInt32> = 61184...65519

    /// The uids handed out.
    public let range: ClosedRange<UInt32>
    private let state: Mutex<(used: Set<uid_t>, next: uid_t)>

    /// Creates an allocator over `range`, which must not include root.
    public init(range: ClosedRange<UInt32> = TaskIdentities.defaultRange) throws {
        guard range.lowerBound > 0 else { throw CanopyError.invalid("task-uids", "the task uid range may not include 0 (root)") }
        self.range = range
        state = Mutex((used: [], next: range.lowerBound))
    }

    /// Parses `LOW-HIGH` (for example `61184-65519`).
    public static func parseRange(_ text: String) throws -> ClosedRange<UInt32> {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2, let low = UInt32(parts[0]), let high = UInt32(parts[1]), low <= high, low > 0, high < UInt32(Int32.max) else {
            throw CanopyError.invalid("task-uids", "\"\(text)\" is not a uid range such as 61184-65519 (above 0, low <= high)")
        }
        return low...high
    }

    /// A free uid, marked used.
    public func allocate() throws -> uid_t {
        try state.withLock { s in
            let size = Int(range.upperBound - range.lowerBound) + 1
            var candidate = s.next
            for _ in 0..<size {
                defer { candidate = candidate >= range.upperBound ? range.lowerBound : candidate + 1 }
                if s.used.contains(candidate) || Self.known(candidate) { continue }
                s.used.insert(candidate)
                s.next = candidate >= range.upperBound ? range.lowerBound : candidate + 1
                return candidate
            }
            throw CanopyError(.unavailable, "every task uid in \(range.lowerBound)-\(range.upperBound) is in use; widen --task-uids")
        }
    }

    /// Marks a uid used (a task re-adopted after a restart).
    public func adopt(_ uid: uid_t) {
        _ = state.withLock { $0.used.insert(uid) }
    }

    /// Frees a uid.
    public func release(_ uid: uid_t) {
        _ = state.withLock { $0.used.remove(uid) }
    }

    /// How many are in use.
    public var inUse: Int { state.withLock { $0.used.count } }

    /// Whether the user database has an entry for the uid (a real user we must not borrow).
    static func known(_ uid: uid_t) -> Bool {
        var pw = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 4096)
        let rc = getpwuid_r(uid, &pw, &buffer, buffer.count, &result)
        return rc == 0 && result != nil
    }
}
