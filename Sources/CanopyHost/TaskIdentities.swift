#if canImport(Glibc)
import Glibc
#endif
import CanopyCore
import Foundation
import Synchronization

/// Per-task identities for a server that runs as root, as systemd's DynamicUser and Slurm's per-job users do:
/// each running task gets a uid (and the gid of the same number) of its own from a range, with no login, no home
/// and no entry in the user database. Two tasks therefore cannot signal, trace or read the `/proc` files of each
/// other, and cannot open each other's working directories (mode 0700, owned by the task).
///
/// A uid is handed out round-robin, so a freed one is reused as late as possible; uids that the user database
/// knows (real users) are skipped. A uid in use is locked machine-wide: an `flock` on `<lockDirectory>/<uid>`,
/// taken here and handed to the task's shim, which holds it for as long as the task runs. So two servers on one
/// machine (two data directories) never hand out the same uid, and a restarted server skips the uids of the tasks
/// it re-adopts without being told.
public final class TaskIdentities: Sendable {
    /// Where the machine-wide uid locks live (a tmpfs: they mean nothing after a reboot).
    public static let defaultLockDirectory = "/run/canopy/task-uids"

    /// A uid handed out, with the descriptor that holds its lock (pass it to the shim, then close it).
    public struct Lease: Sendable {
        /// The uid (and gid).
        public var uid: uid_t
        /// The open, locked lock file.
        public var lockFD: Int32
    }

    /// The default range: systemd's for dynamic users.
    public static let defaultRange: ClosedRange<UInt32> = 61184...65519

    /// The uids handed out.
    public let range: ClosedRange<UInt32>
    private let lockDirectory: String
    private let state: Mutex<(used: Set<uid_t>, next: uid_t)>

    /// Creates an allocator over `range`, which must not include root.
    public init(range: ClosedRange<UInt32> = TaskIdentities.defaultRange, lockDirectory: String = TaskIdentities.defaultLockDirectory) throws {
        guard range.lowerBound > 0 else { throw CanopyError.invalid("task-uids", "the task uid range may not include 0 (root)") }
        self.range = range
        self.lockDirectory = lockDirectory
        try? FileManager.default.createDirectory(atPath: lockDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        var st = stat()
        guard lstat(lockDirectory, &st) == 0, st.st_mode & S_IFMT == S_IFDIR, st.st_uid == 0 else {
            throw CanopyError(.internal, "cannot use \(lockDirectory) for task uid locks (it must be a directory owned by root)")
        }
        // Start where another server is least likely to be: the range is shared by every server on the machine.
        let start = range.lowerBound + UInt32.random(in: 0...(range.upperBound - range.lowerBound))
        state = Mutex((used: [], next: start))
    }

    /// Locks `uid` machine-wide, or nil when another task holds it.
    func lock(_ uid: uid_t) -> Int32? {
        let fd = open("\(lockDirectory)/\(uid)", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { return nil }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            return nil
        }
        return fd
    }

    /// Runs `body` while holding the lock of `uid`; does nothing (returns false) when a task holds it.
    @discardableResult
    public func whileLocked(_ uid: uid_t, _ body: () -> Void) -> Bool {
        guard let fd = lock(uid) else { return false }
        defer { close(fd) }
        body()
        return true
    }

    /// Parses `LOW-HIGH` (for example `61184-65519`).
    public static func parseRange(_ text: String) throws -> ClosedRange<UInt32> {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2, let low = UInt32(parts[0]), let high = UInt32(parts[1]), low <= high, low > 0, high < UInt32(Int32.max) else {
            throw CanopyError.invalid("task-uids", "\"\(text)\" is not a uid range such as 61184-65519 (above 0, low <= high)")
        }
        return low...high
    }

    /// A free uid, marked used and locked.
    public func allocate() throws -> Lease {
        try state.withLock { s in
            let size = Int(range.upperBound - range.lowerBound) + 1
            var candidate = s.next
            // A uid that still owns sockets (a task passed one to another process before it ended) is not handed
            // out: the new task would seem to own them.
            let socketOwners = ListeningSockets.socketOwners()
            for _ in 0..<size {
                defer { candidate = candidate >= range.upperBound ? range.lowerBound : candidate + 1 }
                if s.used.contains(candidate) || Self.known(candidate) || socketOwners.contains(candidate) { continue }
                guard let fd = lock(candidate) else { continue }
                s.used.insert(candidate)
                s.next = candidate >= range.upperBound ? range.lowerBound : candidate + 1
                return Lease(uid: candidate, lockFD: fd)
            }
            throw CanopyError(.unavailable, "every task uid in \(range.lowerBound)-\(range.upperBound) is in use; widen --task-uids")
        }
    }

    /// Marks a uid used (a task re-adopted after a restart).
    public func adopt(_ uid: uid_t) {
        _ = state.withLock { $0.used.insert(uid) }
    }

    /// Marks a uid used and locks it again (a container task re-adopted after a restart, whose lock the server
    /// itself held); returns the lock's descriptor, or nil when another server's task holds it now.
    public func readopt(_ uid: uid_t) -> Int32? {
        adopt(uid)
        return lock(uid)
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
