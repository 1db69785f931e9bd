import CanopyCore
import CanopyHost
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The data store on the local file system: `ROOT/<tenant>/<path>`, one namespace per tenant.
public struct LocalDataStore: DataStore {
    /// The directory holding every tenant's namespace.
    public let root: String

    /// Creates the store under `root` (created if needed).
    public init(root: String) throws {
        self.root = root
        try FileManager.default.createDirectory(atPath: root + "/.scratch", withIntermediateDirectories: true)
    }

    /// A tenant's directory name: the tenant itself when it is a plain name, else a hex encoding.
    static func directory(for tenant: String) -> String {
        let plain = !tenant.isEmpty && !tenant.hasPrefix(".") && tenant.utf8.allSatisfy { c in
            (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c == 45 || c == 95 || c == 46
        }
        return plain ? tenant : "~" + tenant.utf8.map { String(format: "%02x", $0) }.joined()
    }

    public func localPath(tenant: String, path: String) -> String {
        let clean = DataPath.normalize(path) ?? "/"
        return root + "/" + Self.directory(for: tenant) + (clean == "/" ? "" : clean)
    }

    public func entry(tenant: String, path: String) throws -> DataEntry? {
        Self.entry(at: localPath(tenant: tenant, path: path), path: DataPath.normalize(path) ?? "/")
    }

    static func entry(at local: String, path: String) -> DataEntry? {
        var st = stat()
        guard lstat(local, &st) == 0 else { return nil }
        let kind = st.st_mode & S_IFMT
        guard kind == S_IFDIR || kind == S_IFREG else { return nil }
        let modified = Date(timeIntervalSince1970: Double(st.st_mtim.tv_sec) + Double(st.st_mtim.tv_nsec) / 1e9)
        return DataEntry(path: path, isDirectory: kind == S_IFDIR, size: kind == S_IFREG ? Int64(st.st_size) : 0, modifiedAt: modified)
    }

    public func list(tenant: String, path: String) throws -> [DataEntry] {
        let clean = DataPath.normalize(path) ?? "/"
        let local = localPath(tenant: tenant, path: clean)
        guard let me = Self.entry(at: local, path: clean) else {
            if clean == "/" { return [] }
            throw CanopyError(.notFound, "no such file or directory: \(clean)", field: "path")
        }
        guard me.isDirectory else { return [me] }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: local)) ?? []
        return names.sorted().compactMap { name in
            Self.entry(at: local + "/" + name, path: (clean == "/" ? "" : clean) + "/" + name)
        }
    }

    public func upload(tenant: String, path: String) throws -> any DataUpload {
        guard let clean = DataPath.normalize(path), clean != "/" else { throw CanopyError.invalid("path", "a file needs a path below /") }
        let scratch = root + "/.scratch/" + UUID().uuidString
        let fd = open(scratch, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw CanopyError(.internal, "cannot create an upload file") }
        return LocalUpload(fd: fd, scratch: scratch, destination: localPath(tenant: tenant, path: clean), display: clean)
    }

    public func delete(tenant: String, path: String) throws {
        guard let clean = DataPath.normalize(path), clean != "/" else { throw CanopyError.invalid("path", "refusing to delete the whole namespace") }
        let local = localPath(tenant: tenant, path: clean)
        guard Self.entry(at: local, path: clean) != nil else { throw CanopyError(.notFound, "no such file or directory: \(clean)", field: "path") }
        try FileManager.default.removeItem(atPath: local)
    }

}

/// An upload into the local store: a scratch file on the same file system, renamed into place on commit.
final class LocalUpload: DataUpload {
    private var fd: Int32
    private let scratch: String
    private let destination: String
    private let display: String

    init(fd: Int32, scratch: String, destination: String, display: String) {
        self.fd = fd
        self.scratch = scratch
        self.destination = destination
        self.display = display
    }

    deinit { abort() }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard FileTree.writeAll(fd, bytes) else { throw CanopyError(.internal, "cannot write the upload: \(String(cString: strerror(errno)))") }
    }

    func commit() throws {
        guard fsync(fd) == 0 else { throw CanopyError(.internal, "cannot flush the upload") }
        close(fd)
        fd = -1
        let parent = (destination as NSString).deletingLastPathComponent
        do {
            try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
        } catch {
            throw CanopyError(.conflict, "cannot create the directory for \(display): a file is in the way", field: "path")
        }
        var st = stat()
        if lstat(destination, &st) == 0, st.st_mode & S_IFMT == S_IFDIR {
            throw CanopyError(.conflict, "\(display) is a directory", field: "path")
        }
        guard rename(scratch, destination) == 0 else { throw CanopyError(.internal, "cannot store \(display): \(String(cString: strerror(errno)))") }
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
