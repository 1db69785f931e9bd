#if canImport(Glibc)
import Glibc
#endif
import CanopyCore
import Foundation

/// Who tasks run as: a server running as root never runs them as root, but as the configured user.
public enum TaskUser {
    /// The task user's ids when the server runs as root (nil otherwise: tasks run as the server's own user);
    /// throws when that user does not exist or is root.
    public static func resolve(_ name: String) throws -> (uid: uid_t, gid: gid_t)? {
        guard geteuid() == 0 else { return nil }
        guard let pw = getpwnam(name) else {
            throw CanopyError.invalid("task-user", "the server runs as root and tasks never do, but user \"\(name)\" does not exist")
        }
        guard pw.pointee.pw_uid != 0 else { throw CanopyError.invalid("task-user", "tasks never run as root; \"\(name)\" has uid 0") }
        return (pw.pointee.pw_uid, pw.pointee.pw_gid)
    }

    /// The full path of a program on a PATH-style list of directories, or nil.
    public static func findProgram(_ name: String, path: String) -> String? {
        path.split(separator: ":").map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }
}
