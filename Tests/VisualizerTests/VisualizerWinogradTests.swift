// The tiny parity models (16/32 channels on 8x8 maps) are below the size where mmk_conv2d picks
// Winograd for 3x3 convolutions, so the golden checks above run im2col only. This runs the UNet
// evaluation and the VAE decode again with METAMORPH_CONV=winograd (every 3x3 / stride 1 / pad 1
// convolution through mmk_conv2d_winograd3x3_batch, including the cin = 4 conv_in and the
// 3-channel conv_out) against the same diffusers golden data and tolerances.
import Foundation
import XCTest
import MetamorphVisualizer

final class VisualizerWinogradTests: XCTestCase {
    var saved: String?
    override func setUp() {
        saved = ProcessInfo.processInfo.environment["METAMORPH_CONV"]
        setenv("METAMORPH_CONV", "winograd", 1)
    }
    override func tearDown() { if let saved { setenv("METAMORPH_CONV", saved, 1) } else { unsetenv("METAMORPH_CONV") } }

    func testUNetAndVAEWithWinograd() throws {
        let v = try Visualizer(directory: vizRoot + "/tiny")
        let t = Float(try golden()["unet_timestep"]!.double!)
        for threads in [1, 2] {
            let u = try v.unet.forward(sample: try npy("unet_in.npy"), batch: 2, height: 8, width: 8, timestep: t,
                                       context: try npy("unet_ctx.npy"), contextLength: 77, threads: threads)
            let du = maxDiff(u, try npy("unet_out.npy"))
            let img = try v.vae.decode(try npy("vae_in.npy"), batch: 1, height: 8, width: 8, threads: threads)
            let dv = maxDiff(img, try npy("vae_out.npy"))
            print("winograd forced, \(threads) thread(s): unet max diff \(du), vae max diff \(dv)")
            XCTAssertLessThan(du, 1e-4)
            XCTAssertLessThan(dv, 1e-4)
        }
    }
}
