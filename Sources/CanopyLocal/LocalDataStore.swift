import CCanopySys
import CanopyCore
import CanopyHost
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The data store on the local file system: `ROOT/<tenant>/<path>`, one namespace per tenant.
///
/// A task may mount a path of its tenant's store read-write and leave symbolic links, FIFOs or devices there, and
/// the server works on the store as root. So no operation follows a link anywhere below a tenant's directory:
/// every path is opened from a descriptor of that directory with `canopy_open_beneath` (no links, no escapes), entries
/// are looked at with `fstatat(AT_SYMLINK_NOFOLLOW)`, and files are read, created, renamed and removed through
/// descriptors of their parent. A path that goes through a link answers as missing (or, for an upload, is refused).
public struct LocalDataStore: DataStore {
    typealias Descriptor = FileTree.Descriptor

    /// The directory holding every tenant's namespace, with no symbolic link in it (resolved when the store starts).
    public let root: String

    /// Creates the store under `root` (created if needed).
    public init(root: String) throws {
        try FileManager.default.createDirectory(atPath: root + "/.scratch", withIntermediateDirectories: true)
        // Resolved once, so that the server's own part of every local path holds no link: staging and mounts open
        // those paths from `/` without following any.
        guard let resolved = realpath(root, nil) else { throw CanopyError(.internal, "cannot resolve the data store's root \(root)") }
        defer { free(resolved) }
        self.root = String(cString: resolved)
    }

    /// A tenant's directory name: the tenant itself when it is a plain name, else a hex encoding.
    static func directory(for tenant: String) -> String {
        let plain = !tenant.isEmpty && !tenant.hasPrefix(".") && tenant.utf8.allSatisfy { c in
            (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c == 45 || c == 95 || c == 46
        }
        return plain ? tenant : "~" + Hex.encode(tenant.utf8)
    }

    public func localPath(tenant: String, path: String) -> String {
        let clean = DataPath.normalize(path) ?? "/"
        return root + "/" + Self.directory(for: tenant) + (clean == "/" ? "" : clean)
    }

    public func entry(tenant: String, path: String) throws -> DataEntry? {
        try look(tenant: tenant, path: DataPath.normalize(path) ?? "/", opening: false)?.entry
    }

    public func list(tenant: String, path: String) throws -> [DataEntry] {
        let clean = DataPath.normalize(path) ?? "/"
        guard let found = try look(tenant: tenant, path: clean, opening: true) else {
            if clean == "/" { return [] }
            throw CanopyError(.notFound, "no such file or directory: \(clean)", field: "path")
        }
        guard let directory = found.directory else { return [found.entry] }
        let prefix = clean == "/" ? "" : clean
        // Links, FIFOs, sockets and devices are not listed.
        return FileTree.names(in: directory).compactMap { name in
            FileTree.lstatAt(directory, name).flatMap { Self.entry($0, path: prefix + "/" + name) }
        }
    }

    public func openFile(tenant: String, path: String) throws -> (handle: FileHandle, entry: DataEntry)? {
        guard let clean = DataPath.normalize(path), clean != "/", let tenantDirectory = try tenantDirectory(tenant) else { return nil }
        var parts = Self.components(clean)
        let name = parts.removeLast()
        guard let parent = try Self.openDirectory(parts, beneath: tenantDirectory),
            let st = FileTree.lstatAt(parent, name), FileTree.isRegular(st)
        else { return nil }
        // O_NONBLOCK and O_NOCTTY: should the file be swapped for a FIFO or a device after the look, the open neither
        // hangs nor takes a terminal, and what was opened is refused below.
        let fd = canopy_open_beneath(parent.fd, name, O_RDONLY | O_NONBLOCK | O_NOCTTY, 0)
        guard fd >= 0 else { return nil }
        var opened = stat()
        guard fstat(fd, &opened) == 0, FileTree.isRegular(opened), let entry = Self.entry(opened, path: clean) else {
            close(fd)
            return nil
        }
        return (FileHandle(fileDescriptor: fd, closeOnDealloc: true), entry)
    }

    public func upload(tenant: String, path: String) throws -> any DataUpload {
        guard let clean = DataPath.normalize(path), clean != "/" else { throw CanopyError.invalid("path", "a file needs a path below /") }
        let scratch = root + "/.scratch/" + UUID().uuidString
        let fd = open(scratch, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw CanopyError(.internal, "cannot create an upload file") }
        return LocalUpload(fd: fd, scratch: scratch, store: self, tenant: tenant, path: clean)
    }

    public func delete(tenant: String, path: String) throws {
        guard let clean = DataPath.normalize(path), clean != "/" else { throw CanopyError.invalid("path", "refusing to delete the whole namespace") }
        let missing = CanopyError(.notFound, "no such file or directory: \(clean)", field: "path")
        guard let tenantDirectory = try tenantDirectory(tenant) else { throw missing }
        var parts = Self.components(clean)
        let name = parts.removeLast()
        guard let parent = try Self.openDirectory(parts, beneath: tenantDirectory), let st = FileTree.lstatAt(parent, name),
            FileTree.isDirectory(st) || FileTree.isRegular(st)
        else { throw missing }
        // Through the parent's descriptor, a tree at a time, never following a link inside it.
        FileTree.remove(name, in: parent)
        // What is left is deeper than the walk goes (a stranger's task can nest directories without end).
        guard FileTree.lstatAt(parent, name) == nil else {
            throw CanopyError(
                .conflict, "\(clean) is nested deeper than \(FileTree.maxDepth) levels; delete its deepest directories first (canopy data ls)",
                field: "path")
        }
    }
}

extension LocalDataStore {
    /// The components of a normalized path (none for `/`).
    static func components(_ clean: String) -> [String] {
        clean.split(separator: "/").map(String.init)
    }

    /// A regular file's or a directory's entry; nil for anything else.
    static func entry(_ st: stat, path: String) -> DataEntry? {
        guard FileTree.isDirectory(st) || FileTree.isRegular(st) else { return nil }
        let modified = Date(timeIntervalSince1970: Double(st.st_mtim.tv_sec) + Double(st.st_mtim.tv_nsec) / 1e9)
        let size = FileTree.isRegular(st) ? Int64(st.st_size) : 0
        return DataEntry(path: path, isDirectory: FileTree.isDirectory(st), size: size, modifiedAt: modified)
    }

    /// Opens the store's root (the server's own directory).
    func rootDirectory() throws -> Descriptor {
        let fd = open(root, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { throw CanopyError(.internal, "cannot open the data store: \(String(cString: strerror(errno)))") }
        return Descriptor(fd)
    }

    /// The tenant's directory, opened without following a link; created first with `create`; nil if it is missing.
    func tenantDirectory(_ tenant: String, create: Bool = false) throws -> Descriptor? {
        let rootDirectory = try rootDirectory()
        let name = Self.directory(for: tenant)
        if create, mkdirat(rootDirectory.fd, name, 0o755) != 0, errno != EEXIST {
            throw CanopyError(.internal, "cannot create the tenant's data directory: \(String(cString: strerror(errno)))")
        }
        return try Self.openDirectory([name], beneath: rootDirectory)
    }

    /// Opens `components` below `base` as a directory without following a link; nil if one is missing, is not a
    /// directory, or is a link.
    static func openDirectory(_ components: [String], beneath base: Descriptor) throws -> Descriptor? {
        if components.isEmpty { return Descriptor(dup(base.fd)) }
        let fd = canopy_open_beneath(base.fd, components.joined(separator: "/"), O_RDONLY | O_DIRECTORY, 0)
        if fd >= 0 { return Descriptor(fd) }
        switch errno {
        case ENOENT, ENOTDIR, ELOOP, EXDEV: return nil
        case ENAMETOOLONG: throw CanopyError.invalid("path", "path too long for the data store")
        default: throw CanopyError(.internal, "cannot open a data directory: \(String(cString: strerror(errno)))")
        }
    }

    /// The entry at `path` and, for a directory when `opening`, a descriptor of it; nil if there is none.
    func look(tenant: String, path clean: String, opening: Bool) throws -> (entry: DataEntry, directory: Descriptor?)? {
        guard let tenantDirectory = try tenantDirectory(tenant) else { return nil }
        var parts = Self.components(clean)
        guard let name = parts.popLast() else {
            var st = stat()
            guard fstat(tenantDirectory.fd, &st) == 0, let me = Self.entry(st, path: "/") else { return nil }
            return (me, opening ? tenantDirectory : nil)
        }
        guard let parent = try Self.openDirectory(parts, beneath: tenantDirectory), let st = FileTree.lstatAt(parent, name),
            let me = Self.entry(st, path: clean)
        else { return nil }
        guard opening, me.isDirectory else { return (me, nil) }
        // Swapped for a link or a file since the look: as if it were not there.
        guard let directory = try Self.openDirectory([name], beneath: parent) else { return nil }
        return (me, directory)
    }
}

/// An upload into the local store: a scratch file on the same file system, renamed into place on commit.
final class LocalUpload: DataUpload {
    private var fd: Int32
    private let scratch: String
    private let store: LocalDataStore
    private let tenant: String
    private let path: String

    init(fd: Int32, scratch: String, store: LocalDataStore, tenant: String, path: String) {
        self.fd = fd
        self.scratch = scratch
        self.store = store
        self.tenant = tenant
        self.path = path
    }

    deinit { abort() }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard FileTree.writeAll(fd, bytes) else { throw CanopyError(.internal, "cannot write the upload: \(String(cString: strerror(errno)))") }
    }

    /// Creates the missing parent directories one at a time below the tenant's directory, never through a link,
    /// and renames the scratch file into the parent opened that way.
    func commit() throws {
        guard fsync(fd) == 0 else { throw CanopyError(.internal, "cannot flush the upload") }
        close(fd)
        fd = -1
        guard var current = try store.tenantDirectory(tenant, create: true) else {
            throw CanopyError(.conflict, "cannot store \(path): the tenant's directory is not a directory", field: "path")
        }
        var parts = LocalDataStore.components(path)
        let name = parts.removeLast()
        for part in parts {
            var next = canopy_open_beneath(current.fd, part, O_RDONLY | O_DIRECTORY, 0)
            if next < 0, errno == ENOENT {
                if mkdirat(current.fd, part, 0o755) != 0, errno != EEXIST { throw failure("cannot create the directory for \(path)") }
                next = canopy_open_beneath(current.fd, part, O_RDONLY | O_DIRECTORY, 0)
            }
            guard next >= 0 else { throw blocked(part, in: current) }
            current = FileTree.Descriptor(next)
        }
        if let st = FileTree.lstatAt(current, name), FileTree.isDirectory(st) {
            throw CanopyError(.conflict, "\(path) is a directory", field: "path")
        }
        // A link, FIFO or file at the last component is replaced by the upload (rename never follows it).
        guard renameat(AT_FDCWD, scratch, current.fd, name) == 0 else {
            if errno == EISDIR || errno == ENOTEMPTY || errno == EEXIST { throw CanopyError(.conflict, "\(path) is a directory", field: "path") }
            throw failure("cannot store \(path)")
        }
    }

    /// Why the directory `part` in `directory` could not be opened: a link or a file in the way is the caller's
    /// to sort out (a 409 naming `path`), anything else is the server's.
    private func blocked(_ part: String, in directory: FileTree.Descriptor) -> CanopyError {
        let code = errno
        if let st = FileTree.lstatAt(directory, part) {
            if st.st_mode & S_IFMT == S_IFLNK {
                return CanopyError(.conflict, "\(path) goes through a symbolic link (\(part)); refusing it", field: "path")
            }
            if !FileTree.isDirectory(st) {
                return CanopyError(.conflict, "cannot create the directory for \(path): a file is in the way", field: "path")
            }
        }
        errno = code
        return failure("cannot create the directory for \(path)")
    }

    /// The error for a failed system call (see errno): a name too long is the caller's, the rest the server's.
    private func failure(_ what: String) -> CanopyError {
        if errno == ENAMETOOLONG { return CanopyError.invalid("path", "path too long for the data store") }
        if errno == ENOTDIR || errno == ELOOP || errno == ENOENT {
            // A directory on the way was changed while the upload was being put in place.
            return CanopyError(.conflict, "\(what): the path changed while the file was being stored", field: "path")
        }
        return CanopyError(.internal, "\(what): \(String(cString: strerror(errno)))")
    }

    /// Closes and removes the scratch file, unless it was committed (then the unlink finds nothing).
    func abort() {
        if fd >= 0 {
            close(fd)
            fd = -1
        }
        unlink(scratch)
    }
}
