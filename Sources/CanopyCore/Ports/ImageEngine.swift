import Foundation

/// An image as the container engine holds it.
public struct EngineImage: Sendable, Hashable, Codable {
    /// The engine's content id (`sha256:...`).
    public var id: String
    /// Its size on disk, in bytes.
    public var sizeBytes: Int64
    /// The references that name it in the engine.
    public var references: [String]

    /// Creates an engine image.
    public init(id: String, sizeBytes: Int64, references: [String] = []) {
        self.id = id
        self.sizeBytes = sizeBytes
        self.references = references
    }
}

/// The image side of a container engine: what the image catalog needs. References given to it are engine
/// references, which the catalog chooses (see `ImageRecord.engineReference`), never names straight from a user.
public protocol ImageEngine: Sendable {
    /// Creates an image from a root-filesystem tarball (as `docker import`), named `reference`.
    func importRootfs(file: String, as reference: String) async throws -> EngineImage
    /// The references an image archive would give its images, read from the file before anything is loaded; throws
    /// (naming the field `body`) when the file is not an archive the engine's `load` takes in a form whose names can
    /// be read first.
    func archiveReferences(file: String) async throws -> [String]
    /// Loads an image archive (as `docker load`); returns the references the archive named, with their images.
    func load(file: String) async throws -> [(reference: String, image: EngineImage)]
    /// Pulls `reference` from its registry, reporting progress lines as they come.
    func pull(_ reference: String, progress: @escaping @Sendable (String) -> Void) async throws -> EngineImage
    /// Gives an image one more name.
    func tag(_ source: String, as reference: String) async throws
    /// The image a reference names, or nil.
    func inspect(_ reference: String) async throws -> EngineImage?
    /// Every reference the engine has, with the id of the image it names.
    func allReferences() async throws -> [String: String]
    /// Removes a reference (and the image, once nothing else names it or uses it).
    func untag(_ reference: String) async throws
    /// Writes the root file system of the image `reference` names into `directory` (which must not exist; it is
    /// created private to the server), made safe to hand to tasks: no device files, no set-id bits, every file the
    /// server's. Returns the image's environment (`KEY=value` entries), which a runtime gives its tasks. For
    /// runtimes that run images without the engine (the Slurm backend).
    func exportFilesystem(_ reference: String, into directory: String) async throws -> [String]
}
