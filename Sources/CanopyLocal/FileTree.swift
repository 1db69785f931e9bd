import CanopyCore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Copies file trees between the data store and tasks' directories without following symbolic links: a task
/// (an unprivileged user) controls its own directory, and the server must never copy what a link points to.
enum FileTree {
    /// Copies `source` (a regular file or a directory) to `destination`, which must not exist. Symbolic links,
    /// devices and sockets are skipped. Returns the number of files copied.
    @discardableResult
    static func copy(from source: String, to destination: String, owner: (uid: uid_t, gid: gid_t)? = nil) throws -> Int {
        var st = stat()
        guard lstat(source, &st) == 0 else { throw StagingError("\(source) does not exist") }
        switch st.st_mode & S_IFMT {
        case S_IFDIR:
            guard mkdir(destination, 0o755) == 0 else { throw StagingError("cannot create \(destination): \(String(cString: strerror(errno)))") }
            if let owner { chown(destination, owner.uid, owner.gid) }
            var count = 0
            let names = (try? FileManager.default.contentsOfDirectory(atPath: source)) ?? []
            for name in names.sorted() {
                count += try copy(from: source + "/" + name, to: destination + "/" + name, owner: owner)
            }
            return count
        case S_IFREG:
            try copyFile(from: source, to: destination, owner: owner)
            return 1
        default:
            return 0
        }
    }

    private static func copyFile(from source: String, to destination: String, owner: (uid: uid_t, gid: gid_t)?) throws {
        let input = open(source, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard input >= 0 else { throw StagingError("cannot read \(source): \(String(cString: strerror(errno)))") }
        defer { close(input) }
        var st = stat()
        guard fstat(input, &st) == 0, st.st_mode & S_IFMT == S_IFREG else { return }
        let output = open(destination, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard output >= 0 else { throw StagingError("cannot create \(destination): \(String(cString: strerror(errno)))") }
        defer { close(output) }
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(input, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw StagingError("cannot read \(source): \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            guard buffer.withUnsafeBytes({ writeAll(output, UnsafeRawBufferPointer(rebasing: $0[..<n])) }) else {
                throw StagingError("cannot write \(destination): \(String(cString: strerror(errno)))")
            }
        }
        if let owner { fchown(output, owner.uid, owner.gid) }
    }

    /// Writes all of `bytes` to `fd`, retrying short writes and interruptions; false on an error (see errno).
    static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Bool {
        var done = 0
        while done < bytes.count {
            let n = write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                return false
            }
            done += n
        }
        return true
    }

    /// Copies `source` to `destination` atomically: into a sibling scratch path, then renamed over it. An existing
    /// destination is replaced only when `overwrite` is true.
    static func replace(_ destination: String, with source: String, overwrite: Bool, display: String) throws {
        let fm = FileManager.default
        let parent = (destination as NSString).deletingLastPathComponent
        try? fm.createDirectory(atPath: parent, withIntermediateDirectories: true)
        let scratch = "\(parent)/.canopy-staging-\(UUID().uuidString)"
        defer { try? fm.removeItem(atPath: scratch) }
        try copy(from: source, to: scratch)
        var st = stat()
        if lstat(destination, &st) == 0 {
            guard overwrite else { throw StagingError("\(display) already exists and overwrite is false") }
            // rename(2) replaces a file or an empty directory in one step; a non-empty directory goes first.
            if st.st_mode & S_IFMT == S_IFDIR {
                let old = "\(parent)/.canopy-old-\(UUID().uuidString)"
                guard rename(destination, old) == 0 else { throw StagingError("cannot replace \(display): \(String(cString: strerror(errno)))") }
                defer { try? fm.removeItem(atPath: old) }
                guard rename(scratch, destination) == 0 else { throw StagingError("cannot replace \(display): \(String(cString: strerror(errno)))") }
                return
            }
        }
        guard rename(scratch, destination) == 0 else { throw StagingError("cannot write \(display): \(String(cString: strerror(errno)))") }
    }
}
