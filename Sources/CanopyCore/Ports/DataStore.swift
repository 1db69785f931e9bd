import Foundation

/// One entry of a data store listing.
public struct DataEntry: Sendable, Hashable, Codable {
    /// Its path in the store.
    public var path: String
    /// Whether it is a directory.
    public var isDirectory: Bool
    /// Size in bytes (0 for directories).
    public var size: Int64
    /// When it last changed.
    public var modifiedAt: Date

    /// Creates an entry.
    public init(path: String, isDirectory: Bool, size: Int64, modifiedAt: Date) {
        self.path = path
        self.isDirectory = isDirectory
        self.size = size
        self.modifiedAt = modifiedAt
    }
}

/// Where workloads' input and output data live: one namespace per tenant, paths such as `/user/alice/data_in`.
/// Callers pass paths already normalized by `DataPath.normalize`.
public protocol DataStore: Sendable {
    /// The local file-system path that holds `path` for `tenant` (it may not exist). Executors copy to and from it;
    /// tasks may have left symbolic links below the tenant's directory, so users of the path must not follow any.
    func localPath(tenant: String, path: String) -> String
    /// The entry at `path`, or nil if there is none (or only something that is neither a file nor a directory,
    /// or a path that goes through a symbolic link).
    func entry(tenant: String, path: String) throws -> DataEntry?
    /// The regular file at `path`, opened for reading, with its entry as opened; nil if there is none (a
    /// directory, a link, a FIFO, a path through a link). The caller reads from the handle, never by path.
    func openFile(tenant: String, path: String) throws -> (handle: FileHandle, entry: DataEntry)?
    /// The entries under a directory (one level), or the entry itself for a file; throws not-found if absent.
    func list(tenant: String, path: String) throws -> [DataEntry]
    /// Starts writing a file at `path`: nothing is visible there until the upload is committed, and then the
    /// whole file at once (replacing a file there; parent directories are created).
    func upload(tenant: String, path: String) throws -> any DataUpload
    /// Deletes a file or directory tree.
    func delete(tenant: String, path: String) throws
}

extension DataStore {
    /// Stores that hold no files to stream (test doubles) have none to open.
    public func openFile(tenant: String, path: String) throws -> (handle: FileHandle, entry: DataEntry)? { nil }
}

/// A file being written into a data store. Write its bytes in order, then `commit`, or `abort` to drop it.
public protocol DataUpload: AnyObject {
    /// Appends bytes.
    func write(_ bytes: UnsafeRawBufferPointer) throws
    /// Makes the file durable and puts it in place.
    func commit() throws
    /// Drops what was written.
    func abort()
}
