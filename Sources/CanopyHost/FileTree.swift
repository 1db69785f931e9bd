import CCanopySys
import CanopyCore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Copies file trees between the data store and tasks' directories without ever following a symbolic link.
///
/// A task's directory is written by a stranger: any component of a path in it may be a link (to the data
/// directory, to `/etc`), a FIFO that would block a reader forever, or a hard link to a file the task could not
/// read itself. So every path below a task's `work` is opened relative to a descriptor of `work`, one component at
/// a time without following links (`canopy_open_beneath`: openat2 with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS), and
/// each entry is checked with `fstatat(AT_SYMLINK_NOFOLLOW)` before it is opened. Only directories and regular
/// files are copied; with `readableBy`, a regular file must belong to that user (the task), so a hard link to
/// someone else's file is refused. Paths on the server's side (the data store) are the server's own.
package enum FileTree {
    /// Who new files and directories belong to.
    package typealias Owner = (uid: uid_t, gid: gid_t)

    /// An open descriptor, closed when the value goes away.
    package final class Descriptor {
        /// The descriptor.
        package let fd: Int32
        /// Takes ownership of `fd`.
        package init(_ fd: Int32) { self.fd = fd }
        deinit { close(fd) }
    }

    static func error(_ what: String) -> StagingError { StagingError("\(what): \(String(cString: strerror(errno)))") }

    /// Opens a directory the server owns, by its absolute path.
    package static func openDirectory(_ path: String) throws -> Descriptor {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { throw error("cannot open \(path)") }
        return Descriptor(fd)
    }

    /// Opens an absolute path as a directory from `/` without following a link in any component: for data-store
    /// paths, where a task with a read-write mount may have left links (the store's root is resolved when the
    /// store starts, so the server's own part of the path holds none).
    static func openDirectoryWithoutLinks(_ path: String, display: String) throws -> Descriptor {
        try openDirectory(beneath: try openDirectory("/"), path.split(separator: "/").map(String.init), display: display)
    }

    /// Opens a host path (an admin-allowed mount source) from `/` without following a link in any component: a
    /// link planted inside an allowed directory must not turn a mount towards the rest of the host. Returns the
    /// open descriptor (the caller closes it).
    package static func openWithoutLinks(_ path: String) throws -> Int32 {
        let root = try openDirectory("/")
        let relative = path.split(separator: "/").joined(separator: "/")
        let fd = canopy_open_beneath(root.fd, relative.isEmpty ? "." : relative, O_RDONLY | O_NONBLOCK | O_NOCTTY, 0)
        guard fd >= 0 else {
            if errno == ENOENT { throw StagingError("mount source \(path) does not exist") }
            throw StagingError("mount source \(path) goes through a symbolic link or cannot be opened; refusing it")
        }
        return fd
    }

    /// Opens `components` below `base` as a directory, refusing links and escapes.
    static func openDirectory(beneath base: Descriptor, _ components: [String], display: String) throws -> Descriptor {
        guard let dir = try openDirectoryIfPresent(beneath: base, components, display: display) else {
            throw StagingError("\(display): no such directory")
        }
        return dir
    }

    /// As `openDirectory(beneath:)`, but nil when a component does not exist.
    static func openDirectoryIfPresent(beneath base: Descriptor, _ components: [String], display: String) throws -> Descriptor? {
        if components.isEmpty { return Descriptor(dup(base.fd)) }
        let fd = canopy_open_beneath(base.fd, components.joined(separator: "/"), O_RDONLY | O_DIRECTORY, 0)
        guard fd >= 0 else {
            if errno == ENOENT { return nil }
            if errno == ELOOP || errno == EXDEV || errno == ENOTDIR { throw StagingError("\(display) goes through a symbolic link or a file; refusing it") }
            throw error("cannot open \(display)")
        }
        return Descriptor(fd)
    }

    /// Creates (where missing) and opens the directories `components` below `base`; new ones get `owner`.
    static func makeDirectories(beneath base: Descriptor, _ components: [String], owner: Owner?, display: String) throws -> Descriptor {
        var current = Descriptor(dup(base.fd))
        for name in components {
            // An existing directory is opened without trying to create it (the server may not own its parent).
            let existing = canopy_open_beneath(current.fd, name, O_RDONLY | O_DIRECTORY, 0)
            if existing >= 0 {
                current = Descriptor(existing)
                continue
            }
            if mkdirat(current.fd, name, 0o755) == 0 {
                if let owner { fchownat(current.fd, name, owner.uid, owner.gid, AT_SYMLINK_NOFOLLOW) }
            } else if errno != EEXIST {
                throw error("cannot create \(display)")
            }
            let fd = canopy_open_beneath(current.fd, name, O_RDONLY | O_DIRECTORY, 0)
            guard fd >= 0 else { throw StagingError("\(display): \(name) is a symbolic link or a file; refusing it") }
            current = Descriptor(fd)
        }
        return current
    }

    /// Writes `contents` as the file `name` of `dir` (mode `mode`, the server's): written beside under a fresh name
    /// and renamed over, so no name that someone else may control (a link in a directory that is theirs) is ever
    /// opened, and readers see the old file or the new one whole.
    package static func writeFile(_ contents: String, named name: String, in dir: Descriptor, mode: mode_t) throws {
        let temporary = ".\(name).\(getpid()).\(UInt32.random(in: 0...UInt32.max)).tmp"
        let fd = openat(dir.fd, temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
        guard fd >= 0 else { throw error("cannot write \(name)") }
        fchmod(fd, mode)
        let written = Array(contents.utf8).withUnsafeBytes { writeAll(fd, $0) }
        close(fd)
        guard written, renameat(dir.fd, temporary, dir.fd, name) == 0 else {
            let failure = error("cannot write \(name)")
            unlinkat(dir.fd, temporary, 0)
            throw failure
        }
    }

    /// At most `limit` bytes of the file open as `fd` (which it closes), when it is a regular file; nil for a
    /// failed open (`fd` < 0), anything else, or a failed read.
    package static func readSmall(_ fd: Int32, limit: Int) -> String? {
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, isRegular(st) else { return nil }
        var buffer = [UInt8](repeating: 0, count: limit)
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, limit) }
        return n >= 0 ? String(decoding: buffer[0..<n], as: UTF8.self) : nil
    }

    /// The entry `name` in `dir`, not following a link: its stat, or nil if there is none.
    package static func lstatAt(_ dir: Descriptor, _ name: String) -> stat? {
        var st = stat()
        return fstatat(dir.fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 ? st : nil
    }

    /// Whether `st` is a directory's.
    package static func isDirectory(_ st: stat) -> Bool { st.st_mode & S_IFMT == S_IFDIR }
    /// Whether `st` is a regular file's.
    package static func isRegular(_ st: stat) -> Bool { st.st_mode & S_IFMT == S_IFREG }

    /// The names in a directory, sorted, without `.` and `..`.
    package static func names(in dir: Descriptor) -> [String] {
        let copy = dup(dir.fd)
        guard copy >= 0, let stream = fdopendir(copy) else { return [] }
        defer { closedir(stream) }
        rewinddir(stream)
        var names: [String] = []
        while let entry = readdir(stream) {
            let name = withUnsafePointer(to: &entry.pointee.d_name) { $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) } }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// How deep a tree the copy and the removal descend: a stranger's directory may nest thousands of levels
    /// (each level costs a stack frame and two descriptors here), real data does not come near.
    package static let maxDepth = 128

    /// Opens a data-store path for a task's mount: every entry below it is made readable by anyone (read-only
    /// mounts) or given to `owner` (read-write mounts), without following links. The data store's root stays 0700,
    /// so nothing outside a container that mounts the path can reach it. Trees deeper than `maxDepth` are refused.
    /// The whole path is opened from `/` without following any link: a task that mounted a data path read-write
    /// may have left links in it, and a link must never turn a mount (or this walk) towards the host's files.
    /// Returns the source's own descriptor, opened in that walk (the caller closes it).
    @discardableResult
    package static func prepareMount(_ path: String, owner: Owner?, readOnly: Bool) throws -> Int32 {
        let parentPath = (path as NSString).deletingLastPathComponent
        let root = try openDirectory("/")
        let parent = try openDirectory(beneath: root, parentPath.split(separator: "/").map(String.init), display: "mount source \(path)")
        let name = (path as NSString).lastPathComponent
        try prepare(name, in: parent, owner: readOnly ? nil : owner, depth: 0)
        let fd = canopy_open_beneath(parent.fd, name, O_RDONLY | O_NONBLOCK | O_NOCTTY, 0)
        guard fd >= 0 else { throw StagingError("the mount source \(path) is a symbolic link or cannot be opened; refusing it") }
        return fd
    }

    private static func prepare(_ name: String, in dir: Descriptor, owner: Owner?, depth: Int) throws {
        // Opened without following a link (a task that mounts the tree read-write may be changing it now), then
        // changed through the descriptor: a name swapped for a link after a look can never redirect the change.
        let fd = canopy_open_beneath(dir.fd, name, O_RDONLY | O_NONBLOCK | O_NOCTTY, 0)
        guard fd >= 0 else {
            // Below the top, a link is left alone (it is not followed, and nothing is mounted through it).
            if depth == 0 { throw StagingError("the mount source \(name) is a symbolic link or cannot be opened; refusing it") }
            return
        }
        let entry = Descriptor(fd)
        var st = stat()
        guard fstat(fd, &st) == 0, isDirectory(st) || isRegular(st) else { return }
        if let owner { fchown(fd, owner.uid, owner.gid) }
        fchmod(fd, ((st.st_mode & 0o777) | (isDirectory(st) ? 0o755 : 0o644)))
        guard isDirectory(st) else { return }
        guard depth < maxDepth else { throw StagingError("the mounted tree is deeper than \(maxDepth) levels") }
        for child in names(in: entry) { try prepare(child, in: entry, owner: owner, depth: depth + 1) }
    }

    /// Gives what `previous` owns in the tree below `dir` to `owner`, without following links (links themselves
    /// change owner, their targets never): a restarted task's new uid takes over the files its earlier attempt,
    /// under another uid, left in `work`. Entries of anyone else (a hard link to another's file) stay as they are.
    /// Below `maxDepth` levels nothing changes.
    package static func give(_ dir: Descriptor, from previous: uid_t, to owner: Owner, depth: Int = 0) {
        guard depth < maxDepth else { return }
        for name in names(in: dir) {
            guard let st = lstatAt(dir, name), st.st_uid == previous else { continue }
            fchownat(dir.fd, name, owner.uid, owner.gid, AT_SYMLINK_NOFOLLOW)
            guard isDirectory(st) else { continue }
            let fd = canopy_open_beneath(dir.fd, name, O_RDONLY | O_DIRECTORY, 0)
            guard fd >= 0 else { continue }
            give(Descriptor(fd), from: previous, to: owner, depth: depth + 1)
        }
    }

    /// Removes `name` from `dir`, a whole tree if it is a directory, without following links. Below `maxDepth`
    /// levels nothing is removed (the directories above stay, not empty).
    package static func remove(_ name: String, in dir: Descriptor, depth: Int = 0) {
        guard let st = lstatAt(dir, name) else { return }
        if isDirectory(st) {
            guard depth < maxDepth else { return }
            let fd = canopy_open_beneath(dir.fd, name, O_RDONLY | O_DIRECTORY, 0)
            if fd >= 0 {
                let sub = Descriptor(fd)
                for child in names(in: sub) { remove(child, in: sub, depth: depth + 1) }
            }
            unlinkat(dir.fd, name, AT_REMOVEDIR)
        } else {
            unlinkat(dir.fd, name, 0)
        }
    }

    /// Copies the entry `name` of `source` (a directory or a regular file) to `target` in `destination`, which must
    /// not exist. Links, devices, FIFOs and sockets are skipped. With `readableBy`, every regular file must belong
    /// to that user. Returns the number of files copied.
    @discardableResult
    static func copy(
        _ name: String, in source: Descriptor, to target: String, in destination: Descriptor, owner: Owner? = nil, readableBy: uid_t? = nil,
        display: String, depth: Int = 0
    ) throws -> Int {
        guard let st = lstatAt(source, name) else { throw error("cannot read \(display)") }
        if isDirectory(st) {
            guard depth < maxDepth else {
                throw StagingError("\(display.prefix(200))...: directories nest deeper than \(maxDepth) levels; refusing the tree")
            }
            let from = try openDirectory(beneath: source, [name], display: display)
            guard mkdirat(destination.fd, target, 0o755) == 0 else { throw error("cannot create \(display)") }
            let to = try openDirectory(beneath: destination, [target], display: display)
            if let owner { fchown(to.fd, owner.uid, owner.gid) }
            fchmod(to.fd, 0o755)
            var count = 0
            for child in names(in: from) {
                count += try copy(
                    child, in: from, to: child, in: to, owner: owner, readableBy: readableBy, display: display + "/" + child, depth: depth + 1)
            }
            return count
        }
        guard isRegular(st) else { return 0 }
        // O_NONBLOCK: should the entry be swapped for a FIFO after the check, the open does not hang.
        let input = canopy_open_beneath(source.fd, name, O_RDONLY | O_NONBLOCK, 0)
        guard input >= 0 else { throw error("cannot read \(display)") }
        defer { close(input) }
        var opened = stat()
        guard fstat(input, &opened) == 0, isRegular(opened), opened.st_ino == st.st_ino, opened.st_dev == st.st_dev else {
            throw StagingError("\(display) changed while it was being copied")
        }
        if let readableBy, opened.st_uid != readableBy {
            throw StagingError("\(display) does not belong to the task (a hard link to another user's file?); refusing it")
        }
        let output = canopy_open_beneath(destination.fd, target, O_WRONLY | O_CREAT | O_EXCL, 0o644)
        guard output >= 0 else { throw error("cannot create \(display)") }
        defer { close(output) }
        fchmod(output, 0o644)
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(input, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw error("cannot read \(display)")
            }
            if n == 0 { break }
            guard buffer.withUnsafeBytes({ writeAll(output, UnsafeRawBufferPointer(rebasing: $0[..<n])) }) else {
                throw error("cannot write \(display)")
            }
        }
        if let owner { fchown(output, owner.uid, owner.gid) }
        return 1
    }

    /// Writes all of `bytes` to `fd`, retrying short writes and interruptions; false on an error (see errno).
    package static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Bool {
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

    /// Copies the entry `name` of `source` to the server-side path `destination` (a data-store path) atomically:
    /// into a sibling scratch path, then renamed over it. An existing destination is replaced only when `overwrite`
    /// is true. The directories above it are opened (and created where missing) from `/` without following any
    /// link: a task with a read-write mount of the data store may have planted links there.
    static func replace(
        _ destination: String, with name: String, in source: Descriptor, readableBy: uid_t?, overwrite: Bool, display: String
    ) throws {
        let parent = (destination as NSString).deletingLastPathComponent
        let parentDir = try makeDirectories(
            beneath: try openDirectory("/"), parent.split(separator: "/").map(String.init), owner: nil, display: display)
        let scratch = ".canopy-staging-\(UUID().uuidString)"
        defer { remove(scratch, in: parentDir) }
        try copy(name, in: source, to: scratch, in: parentDir, readableBy: readableBy, display: display)
        let last = (destination as NSString).lastPathComponent
        if let st = lstatAt(parentDir, last) {
            guard overwrite else { throw StagingError("\(display) already exists and overwrite is false") }
            // rename(2) replaces a file or an empty directory in one step; a non-empty directory goes first.
            if isDirectory(st) {
                let old = ".canopy-old-\(UUID().uuidString)"
                guard renameat(parentDir.fd, last, parentDir.fd, old) == 0 else { throw error("cannot replace \(display)") }
                defer { remove(old, in: parentDir) }
                guard renameat(parentDir.fd, scratch, parentDir.fd, last) == 0 else { throw error("cannot replace \(display)") }
                return
            }
        }
        guard renameat(parentDir.fd, scratch, parentDir.fd, last) == 0 else { throw error("cannot write \(display)") }
    }
}
