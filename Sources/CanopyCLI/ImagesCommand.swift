import ArgumentParser
import AsyncHTTPClient
import CanopyCore
import CanopyHTTP
import Foundation
import NIOCore
import NIOHTTP1

struct ImagesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "images",
        abstract: "The image catalog: images workloads run (--image NAME:TAG), public or your tenant's own.",
        discussion: """
            A workload's image is looked up in your tenant's images first, then in the public ones. Add images with import \
            (a root-filesystem tarball), load (a docker save archive) or pull (from a registry); only admins add public ones.
            """,
        subcommands: [List.self, Show.self, Import.self, Load.self, Pull.self, Remove.self], defaultSubcommand: List.self)

    /// A catalog name as a path segment: every byte but letters and digits percent-encoded (`team%2Fapp%3Av1`).
    static func segment(_ name: String) -> String {
        name.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._"))) ?? name
    }

    /// A query value, encoded.
    static func query(_ value: String) -> String {
        value.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._"))) ?? value
    }

    /// Which catalog `show` and `rm` look in.
    struct ScopeOptions: ParsableArguments {
        @Flag(help: "The public image of that name (default: your tenant's, else the public one).") var `public` = false
        @Option(help: "Admins: that tenant's image.") var tenant: String?

        var query: String {
            if let tenant { return "?tenant=\(ImagesCommand.query(tenant))" }
            return `public` ? "?public=true" : ""
        }

        func validate() throws {
            if `public` && tenant != nil { throw ValidationError("give --public or --tenant, not both") }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List the images you may run: public ones and your tenant's.")
        @OptionGroup var format: OutputOption

        func run() async throws {
            try await client { c in
                let page = try await c.call(.GET, "/images", as: Page<ImageView>.self)
                if format.json { return printOut(try Format.json(page.items)) }
                printOut(Format.images(page.items))
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "show", abstract: "Show one image: where it came from, its engine reference, its size.")
        @Argument(help: "The image's name, NAME:TAG (the tag defaults to latest).") var name: String
        @OptionGroup var scope: ScopeOptions
        @OptionGroup var format: OutputOption

        func run() async throws {
            try await client { c in
                let image = try await c.call(.GET, "/images/\(ImagesCommand.segment(name))\(scope.query)", as: ImageView.self)
                printOut(format.json ? try Format.json(image) : Format.describe(image))
            }
        }
    }

    struct Import: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "import", abstract: "Import a root-filesystem tarball (as docker import) as an image, uploaded as it is read.")
        @Argument(help: "The tarball (.tar, .tar.gz).") var file: String
        @Option(help: "Its name in the catalog, NAME:TAG.") var name: String
        @Flag(help: "Add it as a public image, which every tenant may run (admins).") var `public` = false
        @OptionGroup var format: OutputOption

        func run() async throws {
            try await client { c in
                let data = try await c.upload(file: file, method: .POST, to: "/images/import?name=\(ImagesCommand.query(name))&public=\(`public`)")
                let image = try APIJSON.decoder().decode(ImageView.self, from: data)
                printOut(format.json ? try Format.json(image) : image.name)
            }
        }
    }

    struct Load: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "load",
            abstract: "Load an image archive (docker save output); each image it holds joins the catalog under the name the archive gives it.")
        @Argument(help: "The archive (.tar).") var file: String
        @Option(help: "Its name in the catalog, NAME:TAG, when the archive holds one image (default: the archive's).") var name: String?
        @Flag(help: "Add it as a public image (admins).") var `public` = false
        @OptionGroup var format: OutputOption

        func run() async throws {
            try await client { c in
                var path = "/images/load?public=\(`public`)"
                if let name { path += "&name=\(ImagesCommand.query(name))" }
                let data = try await c.upload(file: file, method: .POST, to: path)
                let page = try APIJSON.decoder().decode(Page<ImageView>.self, from: data)
                printOut(format.json ? try Format.json(page.items) : page.items.map(\.name).joined(separator: "\n"))
            }
        }
    }

    struct Pull: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "pull", abstract: "Pull an image from its registry into the catalog, printing the engine's progress.")
        @Argument(help: "What to pull, e.g. busybox:1.36 or ghcr.io/org/app:v2.") var reference: String
        @Option(help: "Its name in the catalog, NAME:TAG (default: the reference's name and tag, without the registry).") var name: String?
        @Flag(help: "Add it as a public image (admins).") var `public` = false
        @OptionGroup var format: OutputOption

        func run() async throws {
            try await client { c in
                var result: ImageView?
                var failure: ErrorBody.Detail?
                try await c.lines(.POST, "/images/pull", body: PullImageRequest(reference: reference, name: name, public: `public` ? true : nil)) { line in
                    guard let event = try? APIJSON.decoder().decode(PullEvent.self, from: line) else { return }
                    if let p = event.progress { FileHandle.standardError.write(Data((p + "\n").utf8)) }
                    if let image = event.image { result = image }
                    if let error = event.error { failure = error }
                }
                if let failure {
                    throw CLIError("\(failure.message)\(failure.field.map { " (field \($0))" } ?? "") [\(failure.code)]")
                }
                guard let result else { throw CLIError("the server ended the pull without an answer") }
                printOut(format.json ? try Format.json(result) : result.name)
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rm", abstract: "Remove an image from the catalog: your tenant's, or a public one (admins). Not while unfinished workloads run it.")
        @Argument(help: "The image's name, NAME:TAG.") var name: String
        @OptionGroup var scope: ScopeOptions

        func run() async throws {
            try await client { c in
                _ = try await c.raw(.DELETE, "/images/\(ImagesCommand.segment(name))\(scope.query)")
                printOut(name)
            }
        }
    }
}

extension Format {
    /// Bytes for people: 1.2 GB, 340 MB, 12 kB (powers of 1000, as engines show image sizes).
    static func bytes(_ n: Int64) -> String {
        let units = ["B", "kB", "MB", "GB", "TB"]
        var value = Double(n)
        var unit = 0
        while value >= 1000, unit < units.count - 1 {
            value /= 1000
            unit += 1
        }
        return unit == 0 ? "\(n) B" : String(format: value < 10 ? "%.1f %@" : "%.0f %@", value, units[unit])
    }

    /// The `canopy images ls` table.
    static func images(_ items: [ImageView]) -> String {
        table(
            ["NAME", "SCOPE", "SIZE", "SOURCE", "CREATED", "BY"],
            items.map { [$0.name, $0.public ? "public" : "tenant \($0.tenant ?? "-")", bytes($0.sizeBytes), $0.source, age($0.createdAt), $0.createdBy] })
    }

    /// `canopy images show`.
    static func describe(_ i: ImageView) -> String {
        let lines: [(String, String)] = [
            ("Name", i.name), ("Scope", i.public ? "public" : "tenant \(i.tenant ?? "-")"), ("Size", bytes(i.sizeBytes)),
            ("Source", i.source + (i.origin.map { " (\($0))" } ?? "")), ("Engine reference", i.engineReference), ("Engine id", i.engineID),
            ("Created", "\(i.createdAt) (\(age(i.createdAt))) by \(i.createdBy)"),
        ]
        let width = lines.map(\.0.count).max() ?? 0
        return lines.map { "\($0.0.padding(toLength: width, withPad: " ", startingAt: 0))  \($0.1)" }.joined(separator: "\n")
    }
}

extension CanopyClient {
    /// Streams a local file as a request's body (never read whole into memory); returns the 2xx answer's body.
    func upload(file: String, method: HTTPMethod, to path: String) async throws -> Data {
        guard let handle = FileHandle(forReadingAtPath: file) else { throw CLIError("cannot read \(file)") }
        let size = (try? FileManager.default.attributesOfItem(atPath: file)[.size] as? Int) ?? 0
        let chunks = AsyncStream<ByteBuffer>(bufferingPolicy: .bufferingOldest(4)) { continuation in
            Thread.detachNewThread {
                var sending = true
                while sending, let data = try? handle.read(upToCount: 1 << 20), !data.isEmpty {
                    // Backpressure: wait while the buffer is full rather than read the file ahead of the network.
                    retry: while true {
                        switch continuation.yield(ByteBuffer(bytes: data)) {
                        case .enqueued: break retry
                        case .dropped: Thread.sleep(forTimeInterval: 0.01)
                        case .terminated:
                            sending = false
                            break retry
                        @unknown default: break retry
                        }
                    }
                }
                try? handle.close()
                continuation.finish()
            }
        }
        var r = try request(method, path)
        r.headers.add(name: "Content-Type", value: "application/octet-stream")
        r.body = .stream(chunks, length: .known(Int64(size)))
        let response: HTTPClientResponse
        do {
            response = try await http.execute(r, timeout: .hours(24))
        } catch {
            throw CLIError("upload of \(file) failed: \(Self.cause(error))")
        }
        let buffer = try await response.body.collect(upTo: 16 << 20)
        let data = Data(buffer.readableBytesView)
        guard (200..<300).contains(response.status.code) else { throw CLIError.from(status: response.status.code, data) }
        return data
    }

    /// Sends a request and hands each line of a 2xx answer to `line` as it arrives (NDJSON), or throws the server's error.
    func lines(_ method: HTTPMethod, _ path: String, body: some Encodable, _ line: (Data) throws -> Void) async throws {
        let response: HTTPClientResponse
        do {
            response = try await http.execute(try request(method, path, body: body), timeout: .hours(24))
        } catch {
            throw unreachable(error)
        }
        guard (200..<300).contains(response.status.code) else {
            let buffer = try await response.body.collect(upTo: 1 << 20)
            throw CLIError.from(status: response.status.code, Data(buffer.readableBytesView))
        }
        var pending = Data()
        for try await chunk in response.body {
            pending.append(contentsOf: chunk.readableBytesView)
            while let nl = pending.firstIndex(of: 10) {
                try line(Data(pending[pending.startIndex..<nl]))
                pending.removeSubrange(pending.startIndex...nl)
            }
        }
        if !pending.isEmpty { try line(pending) }
    }
}
