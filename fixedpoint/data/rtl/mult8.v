// Signed 8 x 8 -> 16 bit multiplier (combinational).
// The product of two signed 8-bit values always fits 16 bits:
// the extreme case is -128 * -128 = 16384.
module mult8 (
    input  wire signed [7:0]  a,
    input  wire signed [7:0]  b,
    output wire signed [15:0] p
);
    assign p = a * b;
endmodule
