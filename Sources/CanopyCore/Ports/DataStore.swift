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
    /// The local file-system path that holds `path` for `tenant` (it may not exist). Executors copy to and from it.
    func localPath(tenant: String, path: String) -> String
    /// The entry at `path`, or nil if there is none.
    func entry(tenant: String, path: String) throws -> DataEntry?
    /// The entries under a directory (one level), or the entry itself for a file; throws not-found if absent.
    func list(tenant: String, path: String) throws -> [DataEntry]
    /// Atomically puts the local file `file` at `path`, replacing a file there; creates parent directories.
    func put(tenant: String, path: String, movingFile file: String) throws
    /// Deletes a file or directory tree.
    func delete(tenant: String, path: String) throws
    /// A scratch file path on the same file system, for uploads to be moved in with `put`.
    func scratchFile() -> String
}
