set terminal svg size 1500,640 dynamic font "sans,11"
set output "loss_vs_flops.svg"
set multiplot layout 1,2 title "Held-out loss against training FLOPs at a budget of 5e+12, mean over seeds (main grid solid, sharing strategies dashed, aux-loss 0.016 dotted)"
set xlabel "training FLOPs (10^{12})"
set ylabel "validation NLL (nats/token)"
set grid
unset key
set lmargin 8
set rmargin 2
set xrange [0:5.05466]
plot "curve-vanilla.dat" using ($2/1e12):3 with linespoints pt 7 ps 0.4 lw 2 lc 1 dt 1 title "Vanilla (3 seeds)", \
     "curve-recursive-r3-mcyc.dat" using ($2/1e12):3 with linespoints pt 7 ps 0.4 lw 2 lc 2 dt 1 title "Recursive N_R=3 (Middle-Cycle) (3 seeds)", \
     "curve-mor-e-r2.dat" using ($2/1e12):3 with linespoints pt 7 ps 0.4 lw 2 lc 3 dt 1 title "MoR-E N_R=2, cache (3 seeds)", \
     "curve-mor-e-r3.dat" using ($2/1e12):3 with linespoints pt 7 ps 0.4 lw 2 lc 4 dt 1 title "MoR-E N_R=3, cache (3 seeds)", \
     "curve-mor-e-r4.dat" using ($2/1e12):3 with linespoints pt 7 ps 0.4 lw 2 lc 5 dt 1 title "MoR-E N_R=4, cache (3 seeds)", \
     "curve-mor-e-r3-share.dat" using ($2/1e12):3 with linespoints pt 7 ps 0.4 lw 2 lc 6 dt 1 title "MoR-E N_R=3, KV share (3 seeds)", \
     "curve-mor-t-r3.dat" using ($2/1e12):3 with linespoints pt 7 ps 0.4 lw 2 lc 7 dt 1 title "MoR-T N_R=3, cache (3 seeds)", \
     "curve-recursive-r3-cyc.dat" using ($2/1e12):3 with linespoints pt 7 ps 0.4 lw 1 lc 8 dt 2 title "Recursive N_R=3, Cycle (3 seeds)", \
     "curve-recursive-r3-seq.dat" using ($2/1e12):3 with linespoints pt 7 ps 0.4 lw 1 lc 9 dt 2 title "Recursive N_R=3, Sequence (3 seeds)", \
     "curve-recursive-r3-mseq.dat" using ($2/1e12):3 with linespoints pt 7 ps 0.4 lw 1 lc 10 dt 2 title "Recursive N_R=3, Middle-Sequence (3 seeds)", \
     "curve-mor-e-r2-aux16.dat" using ($2/1e12):3 with linespoints pt 7 ps 0.4 lw 1 lc 11 dt 4 title "MoR-E N_R=2, cache, aux 0.016 (2 seeds)", \
     "curve-mor-e-r3-aux16.dat" using ($2/1e12):3 with linespoints pt 7 ps 0.4 lw 1 lc 12 dt 4 title "MoR-E N_R=3, cache, aux 0.016 (2 seeds)", \
     "curve-mor-e-r4-aux16.dat" using ($2/1e12):3 with linespoints pt 7 ps 0.4 lw 1 lc 13 dt 4 title "MoR-E N_R=4, cache, aux 0.016 (2 seeds)", \
     "curve-mor-e-r3-share-aux16.dat" using ($2/1e12):3 with linespoints pt 7 ps 0.4 lw 1 lc 14 dt 4 title "MoR-E N_R=3, KV share, aux 0.016 (2 seeds)"
set xrange [2.50231:5.05466]
set rmargin 44
set key at screen 0.995, graph 1 right top font ",10"
set ylabel ""
plot "curve-vanilla.dat" using ($2/1e12):3 with linespoints pt 7 ps 0.4 lw 2 lc 1 dt 1 title "Vanilla (3 seeds)", \
     "curve-recursive-r3-mcyc.dat" using ($2/1e12):3 with linespoints pt 7 ps 0.4 lw 2 lc 2 dt 1 title "Recursive N_R=3 (Middle-Cycle) (3 seeds)", \
     "curve-mor-e-r2.dat" using ($2/1e12):3 with linespoints pt 7 ps 0.4 lw 2 lc 3 dt 1 title "MoR-E N_R=2, cache (3 seeds)", \
     "curve-mor-e-r3.dat" using ($2/1e12):3 with linespoints pt 7 ps 0.4 lw 2 lc 4 dt 1 title "MoR-E N_R=3, cache (3 seeds)", \
     "curve-mor-e-r4.dat" using ($2/1e12):3 with linespoints pt 7 ps 0.4 lw 2 lc 5 dt 1 title "MoR-E N_R=4, cache (3 seeds)", \
     "curve-mor-e-r3-share.dat" using ($2/1e12):3 with linespoints pt 7 ps 0.4 lw 2 lc 6 dt 1 title "MoR-E N_R=3, KV share (3 seeds)", \
     "curve-mor-t-r3.dat" using ($2/1e12):3 with linespoints pt 7 ps 0.4 lw 2 lc 7 dt 1 title "MoR-T N_R=3, cache (3 seeds)", \
     "curve-recursive-r3-cyc.dat" using ($2/1e12):3 with linespoints pt 7 ps 0.4 lw 1 lc 8 dt 2 title "Recursive N_R=3, Cycle (3 seeds)", \
     "curve-recursive-r3-seq.dat" using ($2/1e12):3 with linespoints pt 7 ps 0.4 lw 1 lc 9 dt 2 title "Recursive N_R=3, Sequence (3 seeds)", \
     "curve-recursive-r3-mseq.dat" using ($2/1e12):3 with linespoints pt 7 ps 0.4 lw 1 lc 10 dt 2 title "Recursive N_R=3, Middle-Sequence (3 seeds)", \
     "curve-mor-e-r2-aux16.dat" using ($2/1e12):3 with linespoints pt 7 ps 0.4 lw 1 lc 11 dt 4 title "MoR-E N_R=2, cache, aux 0.016 (2 seeds)", \
     "curve-mor-e-r3-aux16.dat" using ($2/1e12):3 with linespoints pt 7 ps 0.4 lw 1 lc 12 dt 4 title "MoR-E N_R=3, cache, aux 0.016 (2 seeds)", \
     "curve-mor-e-r4-aux16.dat" using ($2/1e12):3 with linespoints pt 7 ps 0.4 lw 1 lc 13 dt 4 title "MoR-E N_R=4, cache, aux 0.016 (2 seeds)", \
     "curve-mor-e-r3-share-aux16.dat" using ($2/1e12):3 with linespoints pt 7 ps 0.4 lw 1 lc 14 dt 4 title "MoR-E N_R=3, KV share, aux 0.016 (2 seeds)"
unset multiplot
set output "depths.svg"
set terminal svg size 1200,600 dynamic font "sans,11"
set lmargin 10
set rmargin 12
set bmargin 7
unset multiplot
set title "Recursion depth of held-out tokens under causal routing (mean of seeds)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set yrange [0:1]
set autoscale x
set xlabel ""
set ylabel "share of tokens"
set xtics rotate by 25 right
unset grid
set key outside right title "depth"
plot "depths.dat" using 2:xtic(1) title "1", "depths.dat" using 3:xtic(1) title "2", "depths.dat" using 4:xtic(1) title "3", "depths.dat" using 5:xtic(1) title "4"
