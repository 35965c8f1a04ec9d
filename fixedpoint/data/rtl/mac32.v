// Multiply-accumulate with a 32-bit accumulator: accum <= accum + a * b on
// each rising clock edge.  The register wraps modulo 2^32 (plain two's
// complement addition, no saturation).  rst clears the accumulator
// synchronously instead of accumulating on that edge.
module mac32 (
    input  wire               clk,
    input  wire               rst,
    input  wire signed [7:0]  a,
    input  wire signed [7:0]  b,
    output wire signed [15:0] product,
    output reg  signed [31:0] accum
);
    mult8 u_mult (.a(a), .b(b), .p(product));
    // Sign-extend the 16-bit product to 32 bits before the add.
    wire signed [31:0] product_ext = {{16{product[15]}}, product};
    always @(posedge clk) begin
        if (rst)
            accum <= 32'sd0;
        else
            accum <= accum + product_ext;
    end
endmodule
