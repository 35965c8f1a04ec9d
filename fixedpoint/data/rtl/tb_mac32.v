// Testbench for mac32: drives the vectors written by
// fixedpoint.rtl.write_vectors and prints, for every clock, the product and
// the accumulator as hex so that a script can compare them.
//   iverilog -o sim tb_mac32.v mac32.v mult8.v
//   vvp sim +DIR=<vector folder> +N=<number of vectors>
`timescale 1ns/1ps
module tb_mac32;
    reg clk = 0;
    reg rst;
    reg signed [7:0] a, b;
    wire signed [15:0] product;
    wire signed [31:0] accum;
    mac32 dut (.clk(clk), .rst(rst), .a(a), .b(b), .product(product), .accum(accum));

    localparam MAXN = 4194304;
    reg [7:0]  mem_a   [0:MAXN-1];
    reg [7:0]  mem_b   [0:MAXN-1];
    reg [0:0]  mem_rst [0:MAXN-1];
    reg [1023:0] dir;
    integer n, i, fd;

    initial begin
        if (!$value$plusargs("DIR=%s", dir)) dir = ".";
        if (!$value$plusargs("N=%d", n)) n = 0;
        $readmemh({dir, "/a.hex"}, mem_a, 0, n - 1);
        $readmemh({dir, "/b.hex"}, mem_b, 0, n - 1);
        $readmemh({dir, "/rst.hex"}, mem_rst, 0, n - 1);
        fd = $fopen({dir, "/sim_out.hex"}, "w");
        for (i = 0; i < n; i = i + 1) begin
            a = mem_a[i];
            b = mem_b[i];
            rst = mem_rst[i];
            #1;
            clk = 1;              // accum updates on this edge
            #1;
            $fwrite(fd, "%h %h\n", product, accum);
            clk = 0;
        end
        $fclose(fd);
        $finish;
    end
endmodule
